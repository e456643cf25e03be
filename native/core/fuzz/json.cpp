// libFuzzer target: native/core/json.cpp, the one JSON reader of native/core. Whatever the bytes,
// parse_json returns a value or throws a Range error naming the input; a value it returns survives
// dump_json and parses back equal; json_index agrees with the number it reads.
#include <cstdint>
#include <string>

#include "check.h"
#include "core/json.h"

namespace {

void walk(const jfa::Json& v) {
  if (v.is_number()) {
    const auto n = jfa::json_index(v, UINT64_MAX);
    FUZZ_CHECK(n.has_value() == v.is_number_unsigned());
    if (n) FUZZ_CHECK(*n == v.get<uint64_t>());
    if (n && *n > 0) FUZZ_CHECK(!jfa::json_index(v, *n - 1));
  }
  if (v.is_structured())
    for (const auto& item : v) walk(item);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string what = "input";
  jfa::Json value;
  try {
    value = jfa::parse_json(reinterpret_cast<const char*>(data), size, what);
  } catch (const jfa::Error& e) {
    jfa_fuzz::check_input_error(e, what + " is not valid JSON (");
    return 0;
  }
  walk(value);
  const std::string text = jfa::dump_json(nlohmann::ordered_json(value), "dump");
  const jfa::Json back = jfa::parse_json(text.data(), text.size(), "dumped input");
  FUZZ_CHECK(back == value);
  return 0;
}
