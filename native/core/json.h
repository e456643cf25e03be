#pragma once
// A small JSON reader for file headers (safetensors, configs): objects, arrays, strings, numbers,
// true/false/null. Errors are std::runtime_error with the byte offset.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace jfa {

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::vector<std::pair<std::string, Json>> object;  // in file order

  // The member `key` of an object, or nullptr.
  const Json* find(const std::string& key) const;
  // A number that is an exact integer (as JSON has no integer type), checked by the caller's message.
  bool is_integer() const;

  static Json parse(const char* text, size_t size);
};

// `s` as a JSON string literal, quotes included.
std::string json_quote(const std::string& s);

}  // namespace jfa
