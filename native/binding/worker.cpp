#include "binding/worker.h"

#include <utility>

#include "binding/boundary.h"
#include "core/cuda/cuda.h"
#include "core/runtime.h"

namespace jfa::binding {
namespace {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, AsyncCall call)
      : Napi::AsyncWorker(env, call.op), call_(std::move(call)), deferred_(Napi::Promise::Deferred::New(env)) {
    for (const auto& v : call_.keep) kept_.push_back(Napi::Persistent(v));
    call_.keep.clear();
  }
  Napi::Promise promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      apply_threads();
      call_.work();
      // Kernels queued on this thread's CUDA streams finish before JS sees the result (no-op until
      // a CUDA device was used).
      cuda::synchronize();
    } catch (...) {
      failure_ = describe_current_exception(call_.op);
      SetError(failure_.message);
    }
    release_thread_pool();
  }
  void OnOK() override {
    if (call_.release) call_.release();
    try {
      std::vector<Napi::Value> kept;
      for (const auto& ref : kept_) kept.push_back(ref.Value());
      const Napi::Value value = call_.settle ? call_.settle(Env(), kept) : Env().Undefined();
      kept_.clear();
      deferred_.Resolve(value);
    } catch (const Napi::Error& e) {
      kept_.clear();
      deferred_.Reject(e.Value());
    } catch (...) {
      kept_.clear();
      deferred_.Reject(translate_current_exception(Env(), call_.op).Value());
    }
  }
  void OnError(const Napi::Error&) override {
    if (call_.release) call_.release();
    kept_.clear();
    deferred_.Reject(js_error(Env(), failure_).Value());
  }

 private:
  AsyncCall call_;
  std::vector<Napi::Reference<Napi::Value>> kept_;
  Napi::Promise::Deferred deferred_;
  Failure failure_{ErrorKind::Generic, ""};
};

}  // namespace

Napi::Promise queue_async(Napi::Env env, AsyncCall call) {
  release_thread_pool();  // see there: the worker's pool should be the only one while it runs
  auto* worker = new PromiseWorker(env, std::move(call));  // deletes itself once settled
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

}  // namespace jfa::binding
