// libFuzzer target: the safetensors header parser that SafetensorsFile::open runs on every file.
// Each input is tried twice: as a whole file (8-byte length, JSON header, data), and as the JSON
// header alone, wrapped in a correct length and 256 bytes of data, so that mutations of the JSON
// reach the checks behind the length check.
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "check.h"
#include "core/safetensors_header.h"

namespace {

constexpr uint64_t kWrappedData = 256;

void try_file(const char* bytes, uint64_t size) {
  const std::string path = "fuzz.safetensors";
  try {
    const jfa::SafetensorsHeader h = jfa::parse_safetensors_header(bytes, size, path);
    FUZZ_CHECK(h.data_start >= 8 && h.data_start <= size);
    const uint64_t data_size = size - h.data_start;
    const jfa::SafetensorsEntry* previous = nullptr;
    for (const auto& t : h.tensors) {
      FUZZ_CHECK(t.dtype < std::size(jfa::kSafetensorsDtypes));
      FUZZ_CHECK(t.begin <= t.end && t.end <= data_size);
      uint64_t numel = 1;
      for (const int64_t d : t.shape) {
        FUZZ_CHECK(d >= 0);
        FUZZ_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) && numel <= INT64_MAX);
      }
      FUZZ_CHECK(numel * jfa::kSafetensorsDtypes[t.dtype].element_size == t.end - t.begin);
      FUZZ_CHECK(t.name != "__metadata__");
      if (previous) FUZZ_CHECK(previous->begin <= t.begin);
      previous = &t;
    }
  } catch (const jfa::Error& e) {
    jfa_fuzz::check_input_error(e, path + ": ");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes, so that ASan sees any read past the end of the file.
  std::vector<char> file(data, data + size);
  try_file(file.data(), file.size());

  std::vector<char> wrapped(8 + size + kWrappedData, '\0');
  const uint64_t header_len = size;
  std::memcpy(wrapped.data(), &header_len, 8);
  if (size) std::memcpy(wrapped.data() + 8, data, size);
  try_file(wrapped.data(), wrapped.size());
  return 0;
}
