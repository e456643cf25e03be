#pragma once
// What every fuzz target asserts: a failed check aborts with a message, which libFuzzer reports as
// a crash and saves the input (docs/reliability.md says how it becomes a regression case).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/errors.h"

#define FUZZ_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "fuzz check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

namespace jfa_fuzz {

// Bad input must be a Range error whose message starts with `prefix` (naming the input); any other
// exception escapes the target and is a crash.
inline void check_input_error(const jfa::Error& e, const std::string& prefix) {
  const std::string message = e.what();
  if (e.kind() != jfa::ErrorKind::Range || message.rfind(prefix, 0) != 0) {
    std::fprintf(stderr, "fuzz: bad input gave a %s error not starting with '%s': %s\n",
                 e.kind() == jfa::ErrorKind::Range ? "Range" : "non-Range", prefix.c_str(), message.c_str());
    std::abort();
  }
}

}  // namespace jfa_fuzz
