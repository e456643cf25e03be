#pragma once
// The one way the binding runs long work off the main thread: `work` runs on the libuv pool (no JS
// there), then on the main thread `settle` makes the Promise's value, or the exception `work`
// threw becomes the rejection (classified as guard() does). Everything the work needs travels in
// its closure as C++ values, or is kept alive in `keep`.
#include <napi.h>

#include <functional>
#include <vector>

namespace jfa::binding {

struct AsyncCall {
  const char* op;  // names the work in errors and async hooks
  std::function<void()> work;
  // JS objects the work reaches through raw pointers (typed arrays) or `settle` needs: held by
  // references until the Promise settles, so the GC leaves them alone; handed to settle in order.
  std::vector<Napi::Value> keep;
  // Main thread, after the work succeeded: the Promise's value (undefined when absent).
  std::function<Napi::Value(Napi::Env, const std::vector<Napi::Value>& kept)> settle;
  // Main thread, after success or failure, before the Promise settles (e.g. a model's lease ends).
  std::function<void()> release;
};

Napi::Promise queue_async(Napi::Env env, AsyncCall call);

}  // namespace jfa::binding
