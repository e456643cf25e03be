#include "core/json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace jfa {
namespace {

class Parser {
 public:
  Parser(const char* text, size_t size) : p_(text), begin_(text), end_(text + size) {}

  Json document() {
    Json value = parse_value(0);
    skip_space();
    if (p_ != end_) fail("unexpected text after the value");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(what + " at byte " + std::to_string(p_ - begin_));
  }
  void skip_space() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  void expect(char c) {
    skip_space();
    if (p_ >= end_ || *p_ != c) fail(std::string("expected '") + c + "'");
    ++p_;
  }
  bool literal(const char* word) {
    const size_t n = std::char_traits<char>::length(word);
    if (static_cast<size_t>(end_ - p_) >= n && std::char_traits<char>::compare(p_, word, n) == 0) {
      p_ += n;
      return true;
    }
    return false;
  }

  Json parse_value(int depth) {
    if (depth > kMaxDepth) fail("nesting too deep");
    skip_space();
    if (p_ >= end_) fail("unexpected end of text");
    Json v;
    switch (*p_) {
      case '{': {
        v.type = Json::Type::Object;
        ++p_;
        skip_space();
        if (p_ < end_ && *p_ == '}') {
          ++p_;
          return v;
        }
        while (true) {
          skip_space();
          std::string key = parse_string();
          expect(':');
          v.object.emplace_back(std::move(key), parse_value(depth + 1));
          skip_space();
          if (p_ < end_ && *p_ == ',') {
            ++p_;
            continue;
          }
          expect('}');
          return v;
        }
      }
      case '[': {
        v.type = Json::Type::Array;
        ++p_;
        skip_space();
        if (p_ < end_ && *p_ == ']') {
          ++p_;
          return v;
        }
        while (true) {
          v.array.push_back(parse_value(depth + 1));
          skip_space();
          if (p_ < end_ && *p_ == ',') {
            ++p_;
            continue;
          }
          expect(']');
          return v;
        }
      }
      case '"':
        v.type = Json::Type::String;
        v.string = parse_string();
        return v;
      default:
        break;
    }
    if (literal("true")) {
      v.type = Json::Type::Bool;
      v.boolean = true;
    } else if (literal("false")) {
      v.type = Json::Type::Bool;
    } else if (literal("null")) {
      v.type = Json::Type::Null;
    } else {
      v.type = Json::Type::Number;
      v.number = parse_number();
    }
    return v;
  }

  double parse_number() {
    const char* start = p_;
    if (p_ < end_ && (*p_ == '-' || *p_ == '+')) ++p_;
    while (p_ < end_ && ((*p_ >= '0' && *p_ <= '9') || *p_ == '.' || *p_ == 'e' || *p_ == 'E' || *p_ == '-' || *p_ == '+'))
      ++p_;
    if (p_ == start) fail("expected a value");
    const std::string text(start, p_);
    char* stop = nullptr;
    const double d = std::strtod(text.c_str(), &stop);
    if (stop != text.c_str() + text.size()) fail("malformed number '" + text + "'");
    return d;
  }

  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t hex4() {
    if (end_ - p_ < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      const char c = *p_;
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else fail("bad \\u escape");
    }
    return v;
  }

  std::string parse_string() {
    skip_space();
    if (p_ >= end_ || *p_ != '"') fail("expected a string");
    ++p_;
    std::string out;
    while (true) {
      if (p_ >= end_) fail("unterminated string");
      const char c = *p_++;
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (p_ >= end_) fail("unterminated escape");
      const char e = *p_++;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
            p_ += 2;
            const uint32_t low = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default: fail(std::string("bad escape \\") + e);
      }
    }
  }

  const char* p_;
  const char* begin_;
  const char* end_;
};

}  // namespace

const Json* Json::find(const std::string& key) const {
  for (const auto& [k, v] : object)
    if (k == key) return &v;
  return nullptr;
}

bool Json::is_integer() const {
  return type == Type::Number && std::isfinite(number) && number == std::floor(number) && std::fabs(number) < 9.007199254740992e15;
}

Json Json::parse(const char* text, size_t size) { return Parser(text, size).document(); }

std::string json_quote(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

}  // namespace jfa
