#pragma once
// The header of a safetensors file, parsed and checked without libtorch: the loader
// (SafetensorsFile::open) calls this on the mapped file, and the libFuzzer target
// (native/core/fuzz/safetensors_header.cpp) calls it on arbitrary bytes, so both run the same code.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace jfa {

struct SafetensorsDtype {
  const char* code;     // as the file writes it: "F32", "BF16", ...
  size_t element_size;  // bytes
};

// The dtypes we read and write. safetensors.cpp pairs each with its libtorch type, in this order.
inline constexpr SafetensorsDtype kSafetensorsDtypes[] = {
    {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1}, {"U8", 1}, {"BOOL", 1},
};

struct SafetensorsEntry {
  std::string name;
  size_t dtype;  // index into kSafetensorsDtypes
  std::vector<int64_t> shape;
  // Byte range [begin, end) within the data that follows the header; end - begin is exactly
  // numel * element_size, and end is within the file.
  uint64_t begin;
  uint64_t end;
};

struct SafetensorsHeader {
  uint64_t data_start;                      // 8 + the header's length: where the data begins
  std::vector<SafetensorsEntry> tensors;    // sorted by begin (the order of the file's data)
  std::map<std::string, std::string> metadata;
};

// Parses the 8-byte length and the JSON header at the start of `bytes`, a file of `size` bytes of
// which only the header is read. Every problem is a Range error "<path>: <what is wrong>".
SafetensorsHeader parse_safetensors_header(const char* bytes, uint64_t size, const std::string& path);

}  // namespace jfa
