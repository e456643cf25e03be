#include "core/json.h"

#include <algorithm>
#include <cstring>

#include "core/errors.h"

namespace jfa {
namespace {

// Real headers and configs nest 3 levels; the limit keeps a file of a million '[' from costing
// gigabytes before the parser reaches its end.
constexpr int kMaxDepth = 64;
// Library messages quote the token they stopped in, which can be a whole string of the input.
constexpr size_t kMaxReason = 300;

// nlohmann's message without its "[json.exception.parse_error.101] parse error at line 1,
// column 2: " prefix (we state the position ourselves), cut to a readable length.
std::string reason(const nlohmann::json::exception& e) {
  std::string s = e.what();
  if (const size_t tag = s.find("] "); s.rfind("[json.exception.", 0) == 0 && tag != std::string::npos) s.erase(0, tag + 2);
  if (s.rfind("parse error", 0) == 0)
    if (const size_t colon = s.find(": "); colon != std::string::npos) s.erase(0, colon + 2);
  if (s.size() > kMaxReason) {
    size_t cut = kMaxReason;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 sequence
    s.resize(cut);
    s += "...";
  }
  return s;
}

// "line L, column C, byte B" of byte offset `at` (from 0), for editors and for hex dumps.
std::string position(const char* text, size_t at) {
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < at; ++i)
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  return "line " + std::to_string(line) + ", column " + std::to_string(at - line_start + 1) + ", byte " + std::to_string(at);
}

}  // namespace

Json parse_json(const char* text, size_t size, const std::string& what) {
  // nlohmann ends the input at a NUL outside a string, so "{}\0junk" would pass as "{}".
  if (const void* nul = std::memchr(text, '\0', size))
    throw_range(what + " is not valid JSON (" + position(text, static_cast<const char*>(nul) - text) + ": a NUL byte)");
  const auto limit_depth = [&](int depth, Json::parse_event_t event, Json&) {
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) && depth >= kMaxDepth)
      throw_range(what + " is not valid JSON (arrays and objects nest deeper than " + std::to_string(kMaxDepth) + " levels)");
    return true;
  };
  try {
    return Json::parse(text, text + size, limit_depth, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte counts from 1 and is the last byte read (size + 1 at the end of the input).
    const size_t at = std::min(e.byte == 0 ? 0 : e.byte - 1, size);
    throw_range(what + " is not valid JSON (" + position(text, at) + ": " + reason(e) + ")");
  } catch (const nlohmann::json::exception& e) {
    // out_of_range 406: a number past the range of a double (1e5000), which JSON.parse would make
    // Infinity; RFC 8259 lets a reader refuse it, and no header or config means it.
    throw_range(what + " is not valid JSON (" + reason(e) + (e.id == 406 ? ": beyond the range of a double)" : ")"));
  }
}

std::string dump_json(const nlohmann::ordered_json& value, const std::string& what) {
  try {
    return value.dump();
  } catch (const nlohmann::json::exception& e) {
    throw_range(what + " cannot be written as JSON (" + reason(e) + ")");
  }
}

std::optional<uint64_t> json_index(const Json& v, uint64_t max) {
  if (!v.is_number_unsigned()) return std::nullopt;
  const uint64_t n = v.get<uint64_t>();
  if (n > max) return std::nullopt;
  return n;
}

}  // namespace jfa
