#pragma once
// Errors thrown by native/core. The kind tells the binding which JS error class to raise:
// Type for a wrong kind of argument (dtype, device), Range for a wrong value (shape, index, size).
#include <stdexcept>
#include <string>

namespace jfa {

enum class ErrorKind { Generic, Type, Range };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] inline void throw_type(const std::string& message) { throw Error(ErrorKind::Type, message); }
[[noreturn]] inline void throw_range(const std::string& message) { throw Error(ErrorKind::Range, message); }
[[noreturn]] inline void throw_generic(const std::string& message) { throw Error(ErrorKind::Generic, message); }

}  // namespace jfa
