// native/core tests: plain C++, no Node. Each CHECK can fail; the process exits non-zero if any did.
#include <ATen/ops/allclose.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/tensor.h>

#include <cstdio>
#include <functional>
#include <string>

#include "core/ops.h"
#include "core/runtime.h"

namespace {

int g_failed = 0;
int g_passed = 0;

void check(bool ok, const char* expr, const char* file, int line) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::fprintf(stderr, "FAIL %s:%d: %s\n", file, line, expr);
  }
}
#define EXPECT(expr) check(static_cast<bool>(expr), #expr, __FILE__, __LINE__)

// Runs fn and checks that it throws jfa::Error of `kind` whose message contains `needle`.
void check_throws(const std::function<void()>& fn, jfa::ErrorKind kind, const std::string& needle, int line) {
  try {
    fn();
    check(false, ("expected an error containing: " + needle).c_str(), __FILE__, line);
  } catch (const jfa::Error& e) {
    const bool ok = e.kind() == kind && std::string(e.what()).find(needle) != std::string::npos;
    if (!ok) std::fprintf(stderr, "  got: %s\n", e.what());
    check(ok, ("error containing: " + needle).c_str(), __FILE__, line);
  }
}
#define EXPECT_THROWS(fn, kind, needle) check_throws([&] { fn; }, jfa::ErrorKind::kind, needle, __LINE__)

void test_matmul() {
  const float a[] = {1, 2, 3, 4, 5, 6};  // 2x3
  const float b[] = {1, 0, 0, 1, 1, 1};  // 3x2
  auto ta = jfa::copy_from(a, sizeof a, {2, 3}, c10::kFloat, "t");
  auto tb = jfa::copy_from(b, sizeof b, {3, 2}, c10::kFloat, "t");
  auto c = jfa::matmul(ta, tb);
  auto expected = at::tensor({4.f, 5.f, 10.f, 11.f}).reshape({2, 2});
  EXPECT(at::equal(c, expected));
  EXPECT_THROWS(jfa::matmul(ta, ta), Range, "shapes [2, 3] and [2, 3] cannot be multiplied");
  auto ti = jfa::zeros({3, 2}, c10::kInt);
  EXPECT_THROWS(jfa::matmul(ta, ti), Type, "b must be a floating-point tensor, got int32");
  EXPECT_THROWS(jfa::matmul(ta, jfa::zeros({3, 2}, c10::kDouble)), Type, "dtypes differ (float32 and float64)");
}

void test_add_sum() {
  auto x = jfa::randn({2, 3}, c10::kFloat, 7);
  auto y = jfa::randn({3}, c10::kFloat, 8);
  auto z = jfa::add(x, y, 2.0);
  EXPECT(at::allclose(z.sub(x), y.mul(2.0).expand_as(x)));
  EXPECT_THROWS(jfa::add(x, jfa::zeros({4}, c10::kFloat), 1.0), Range, "[2, 3] and [4] cannot be broadcast");
  auto s = jfa::sum(x, {1}, false);
  EXPECT(s.sizes() == c10::IntArrayRef({2}));
  EXPECT(at::allclose(jfa::sum(x, {}, false), x.sum()));
  EXPECT_THROWS(jfa::sum(x, {2}, false), Range, "dim 2 is out of range");
  EXPECT_THROWS(jfa::sum(x, {1, -1}, false), Range, "listed twice");
}

void test_factories() {
  auto r1 = jfa::randn({4, 5}, c10::kFloat, 42);
  auto r2 = jfa::randn({4, 5}, c10::kFloat, 42);
  auto r3 = jfa::randn({4, 5}, c10::kFloat, 43);
  EXPECT(at::equal(r1, r2));
  EXPECT(!at::equal(r1, r3));
  EXPECT_THROWS(jfa::randn({2}, c10::kInt, 1), Type, "dtype must be floating-point");
  EXPECT_THROWS(jfa::zeros({2, -1}, c10::kFloat), Range, "negative dimension");
  const int32_t data[] = {1, 2, 3};
  EXPECT_THROWS(jfa::copy_from(data, sizeof data, {2, 2}, c10::kInt, "tensor"), Range,
               "holds 4 elements but the data has 3");
  EXPECT(jfa::parse_dtype("bfloat16", "to") == c10::kBFloat16);
  EXPECT_THROWS(jfa::parse_dtype("float8", "to"), Type, "unknown dtype 'float8'");
  EXPECT(jfa::dtype_name(jfa::cast(r1, c10::kBFloat16).scalar_type()) == "bfloat16");
}

void test_runtime() {
  auto info = jfa::runtime_info();
  EXPECT(!info.torch_version.empty() && info.torch_version[0] == '2');
  EXPECT(info.num_threads >= 1);
  const std::string faiss = jfa::faiss_self_check();
  if (!faiss.empty()) std::fprintf(stderr, "  faiss: %s\n", faiss.c_str());
  EXPECT(faiss.empty());
}

}  // namespace

int main() {
  test_matmul();
  test_add_sum();
  test_factories();
  test_runtime();
  std::printf("jfa_core_tests: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
