#pragma once
// JSON for file headers and configs through nlohmann-json: strict RFC 8259 (no comments, no
// leading '+' or zeros, no raw control characters, valid UTF-8 only, numbers that fit a double).
// This is the one place where its exceptions become ours (Range errors naming the input).
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace jfa {

// Objects are std::map: duplicate keys keep the last value, as JSON.parse does, and lookups stay
// O(log n) for headers with thousands of tensors. No reader depends on the order in the file.
using Json = nlohmann::json;

// One JSON document from `size` bytes of `text`. `what` names the input in errors:
// "<what> is not valid JSON (line L, column C, byte B: <reason>)".
Json parse_json(const char* text, size_t size, const std::string& what);

// Compact JSON text for `value` (an ordered_json, so objects keep the order they were built in).
// A string that is not valid UTF-8 is a Range error "<what> cannot be written as JSON (...)".
std::string dump_json(const nlohmann::ordered_json& value, const std::string& what);

// `v` as an integer in [0, max], or nullopt for anything else: a fraction or exponent form
// (1.0, 1e3), a negative number, a number past uint64, a string.
std::optional<uint64_t> json_index(const Json& v, uint64_t max);

}  // namespace jfa
