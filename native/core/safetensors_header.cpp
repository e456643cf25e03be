#include "core/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "core/errors.h"
#include "core/json.h"

namespace jfa {
namespace {

// Headers larger than this are not safetensors headers (the format caps them at 100 MB).
constexpr uint64_t kMaxHeader = 100'000'000;

[[noreturn]] void bad(const std::string& path, const std::string& what) { throw_range(path + ": " + what); }

// As checks.h's shape_str, which needs libtorch.
std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

}  // namespace

SafetensorsHeader parse_safetensors_header(const char* bytes, uint64_t size, const std::string& path) {
  if (size < 8) bad(path, "too short to be a safetensors file (" + std::to_string(size) + " bytes)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian, as on every platform we build for
  if (header_len > kMaxHeader || header_len > size - 8)
    bad(path, "header length " + std::to_string(header_len) + " does not fit the file (" + std::to_string(size) +
                  " bytes): truncated, or not a safetensors file");
  const Json header = parse_json(bytes + 8, header_len, path + ": header");
  if (!header.is_object()) bad(path, "header is not a JSON object");
  const uint64_t data_size = size - 8 - header_len;

  SafetensorsHeader out;
  out.data_start = 8 + header_len;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) bad(path, "__metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) bad(path, "__metadata__ value of '" + k + "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!info.is_object()) bad(path, where + " is not described by an object");
    const auto dtype = info.find("dtype");
    const auto shape = info.find("shape");
    const auto offsets = info.find("data_offsets");
    if (dtype == info.end() || !dtype->is_string()) bad(path, where + " has no dtype string");
    if (shape == info.end() || !shape->is_array()) bad(path, where + " has no shape array");
    if (offsets == info.end() || !offsets->is_array() || offsets->size() != 2) bad(path, where + " has no data_offsets [begin, end]");
    const auto begin = json_index((*offsets)[0], UINT64_MAX), end = json_index((*offsets)[1], UINT64_MAX);
    if (!begin || !end) bad(path, where + " has data_offsets that are not two non-negative integers");
    if (*end < *begin)
      bad(path, where + " has data_offsets [" + std::to_string(*begin) + ", " + std::to_string(*end) + ") that run backwards");
    SafetensorsEntry entry{name, 0, {}, *begin, *end};
    const std::string code = dtype->get<std::string>();
    const auto* known = std::find_if(std::begin(kSafetensorsDtypes), std::end(kSafetensorsDtypes),
                                     [&](const SafetensorsDtype& d) { return code == d.code; });
    if (known == std::end(kSafetensorsDtypes)) bad(path, where + " has unsupported dtype '" + code + "'");
    entry.dtype = static_cast<size_t>(known - std::begin(kSafetensorsDtypes));
    for (const auto& d : *shape) {
      const auto n = json_index(d, INT64_MAX);
      if (!n) bad(path, where + " has a shape entry that is not a non-negative integer");
      entry.shape.push_back(static_cast<int64_t>(*n));
    }
    // libtorch refuses a shape whose running product overflows int64, even with a 0 later on.
    uint64_t numel = 1;
    for (const int64_t d : entry.shape)
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) || numel > INT64_MAX)
        bad(path, where + " has shape " + shape_text(entry.shape) + ", more elements than a tensor can hold");
    if (entry.end > data_size)
      bad(path, where + " data [" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
                    ") lies past the end of the data (" + std::to_string(data_size) + " bytes): the file is truncated");
    uint64_t want = 0;
    const bool huge = __builtin_mul_overflow(numel, static_cast<uint64_t>(known->element_size), &want);
    if (huge || want != entry.end - entry.begin)
      bad(path, where + " of shape " + shape_text(entry.shape) + " and dtype " + code + " needs " +
                    (huge ? std::string("2^64 or more") : std::to_string(want)) + " bytes but has " +
                    std::to_string(entry.end - entry.begin));
    out.tensors.push_back(std::move(entry));
  }
  std::sort(out.tensors.begin(), out.tensors.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.begin != b.begin ? a.begin < b.begin : a.name < b.name; });
  // Each byte of the data belongs to one tensor at most: overlapping tensors would alias each other.
  const SafetensorsEntry* previous = nullptr;
  for (const auto& e : out.tensors) {
    if (e.begin == e.end) continue;
    if (previous && e.begin < previous->end)
      bad(path, "tensors '" + previous->name + "' [" + std::to_string(previous->begin) + ", " + std::to_string(previous->end) + ") and '" +
                    e.name + "' [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ") overlap in the data");
    previous = &e;
  }
  return out;
}

}  // namespace jfa
