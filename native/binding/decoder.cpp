#include "binding/decoder.h"

#include <ATen/ops/empty.h>

#include <utility>
#include <vector>

#include "binding/tensor.h"
#include "binding/worker.h"

namespace jfa::binding {
namespace {

// What a live Decoder owns; the session is destroyed before the lease ends.
struct DecoderState {
  std::shared_ptr<ReaderLease> lease;
  std::unique_ptr<DecodeSession> session;
};

// (b, k) int64 tokens as k-long JS arrays, one per row.
Napi::Array token_rows(Napi::Env env, const at::Tensor& tokens) {
  const at::Tensor cpu = tokens.to(at::kCPU).contiguous();
  const int64_t b = cpu.size(0), k = cpu.size(1);
  const int64_t* data = cpu.data_ptr<int64_t>();
  Napi::Array rows = Napi::Array::New(env, static_cast<size_t>(b));
  for (int64_t r = 0; r < b; ++r) {
    Napi::Array row = Napi::Array::New(env, static_cast<size_t>(k));
    for (int64_t j = 0; j < k; ++j) row.Set(static_cast<uint32_t>(j), static_cast<double>(data[r * k + j]));
    rows.Set(static_cast<uint32_t>(r), row);
  }
  return rows;
}

class Decoder : public CheckedWrap<Decoder> {
 public:
  static Napi::Function define(Napi::Env env, Signatures& sig) {
    return DefineClass(env, "Decoder",
                       {
                           method<&Decoder::step_async, 1>(sig, "Decoder", "stepAsync", "decoder.step"),
                           method<&Decoder::stop, 1>(sig, "Decoder", "stop", "decoder.stop"),
                           method<&Decoder::dispose, 0>(sig, "Decoder", "dispose", "decoder.dispose"),
                           InstanceAccessor<&Decoder::done>("done"),
                           InstanceAccessor<&Decoder::batch_size>("batchSize"),
                           InstanceAccessor<&Decoder::produced>("produced"),
                       });
  }

  explicit Decoder(const Napi::CallbackInfo& info) : CheckedWrap<Decoder>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "Decoder: made by model.decoderAsync(ids, options), not by new");
    state_.reset(info[0].As<Napi::External<DecoderState>>().Data());
    batch_ = state_->session->batch_size();
    sync();
  }

 private:
  // Reads the session's progress; a finished session is freed now (its cache, and the lease).
  void sync() {
    produced_ = state_->session->produced();
    if (state_->session->done()) close();
  }
  void close() {
    done_ = true;
    if (!busy_) state_.reset();  // else the running step's release frees it
  }
  DecodeSession& live(const char* op) const {
    if (disposed_) throw Napi::TypeError::New(Env(), std::string(op) + ": the decoder is disposed");
    if (busy_) throw Napi::Error::New(Env(), std::string(op) + ": a step is running; await it first");
    return *state_->session;
  }

  Napi::Value step_async(const Napi::CallbackInfo& info) {
    const char* op = "decoder.step";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const int64_t n = int_arg(info, 0, op, "n", 1, 1);
      if (done_ && !disposed_ && !busy_) {
        auto deferred = Napi::Promise::Deferred::New(info.Env());
        deferred.Resolve(token_rows(info.Env(), at::empty({batch_, 0}, at::kLong)));
        return deferred.Promise();
      }
      DecodeSession* session = &live(op);
      auto tokens = std::make_shared<at::Tensor>();
      busy_ = true;
      // The JS object is kept until the step settles, so `this` and the session outlive the work.
      return queue_async(info.Env(), {op, [session, n, tokens] { *tokens = session->step(n); }, {info.This()},
                                      [tokens](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                                        return token_rows(env, *tokens);
                                      },
                                      [this] {
                                        busy_ = false;
                                        if (disposed_) state_.reset();
                                        else sync();
                                      }});
    });
  }

  Napi::Value stop(const Napi::CallbackInfo& info) {
    const char* op = "decoder.stop";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const std::vector<int64_t> rows = int_list_arg(info, 0, op, "rows");
      if (done_ && !disposed_ && !busy_) return info.Env().Undefined();
      live(op).stop(rows);
      sync();
      return info.Env().Undefined();
    });
  }

  // A running step returns after its current token; its memory and the model's lease go then.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    if (state_) state_->session->cancel();
    disposed_ = done_ = true;
    if (!busy_) state_.reset();
    return info.Env().Undefined();
  }

  Napi::Value done(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), done_); }
  Napi::Value batch_size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(batch_)); }
  Napi::Value produced(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(produced_)); }

  std::unique_ptr<DecoderState> state_;
  int64_t batch_ = 0, produced_ = 0;
  bool busy_ = false, done_ = false, disposed_ = false;
};

// What a live ContinuousDecoder owns; the session is destroyed before the lease ends.
struct ContinuousState {
  std::shared_ptr<ReaderLease> lease;
  std::unique_ptr<ContinuousSession> session;
};

// Ended sequences as JS objects {prompt, tokens}.
Napi::Array finished_sequences(Napi::Env env, const std::vector<FinishedSequence>& done) {
  Napi::Array out = Napi::Array::New(env, done.size());
  for (size_t i = 0; i < done.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("prompt", Napi::Number::New(env, static_cast<double>(done[i].prompt)));
    Napi::Array tokens = Napi::Array::New(env, done[i].tokens.size());
    for (size_t j = 0; j < done[i].tokens.size(); ++j) tokens.Set(static_cast<uint32_t>(j), static_cast<double>(done[i].tokens[j]));
    o.Set("tokens", tokens);
    out.Set(static_cast<uint32_t>(i), o);
  }
  return out;
}

// The same life as Decoder's: one step at a time, freed once done or disposed.
class ContinuousDecoder : public CheckedWrap<ContinuousDecoder> {
 public:
  static Napi::Function define(Napi::Env env, Signatures& sig) {
    return DefineClass(env, "ContinuousDecoder",
                       {
                           method<&ContinuousDecoder::step_async, 1>(sig, "ContinuousDecoder", "stepAsync", "continuous.step"),
                           method<&ContinuousDecoder::dispose, 0>(sig, "ContinuousDecoder", "dispose", "continuous.dispose"),
                           InstanceAccessor<&ContinuousDecoder::done>("done"),
                           InstanceAccessor<&ContinuousDecoder::remaining>("remaining"),
                       });
  }

  explicit ContinuousDecoder(const Napi::CallbackInfo& info) : CheckedWrap<ContinuousDecoder>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "ContinuousDecoder: made by model.continuousDecoderAsync(ids, lengths, options), not by new");
    state_.reset(info[0].As<Napi::External<ContinuousState>>().Data());
    sync();
  }

 private:
  void sync() {
    remaining_ = state_->session->remaining();
    if (state_->session->done()) close();
  }
  void close() {
    done_ = true;
    if (!busy_) state_.reset();
  }

  Napi::Value step_async(const Napi::CallbackInfo& info) {
    const char* op = "continuous.step";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const int64_t n = int_arg(info, 0, op, "n", 1, 1);
      if (disposed_) throw Napi::TypeError::New(info.Env(), std::string(op) + ": the decoder is disposed");
      if (busy_) throw Napi::Error::New(info.Env(), std::string(op) + ": a step is running; await it first");
      if (done_) {
        auto deferred = Napi::Promise::Deferred::New(info.Env());
        deferred.Resolve(Napi::Array::New(info.Env()));
        return deferred.Promise();
      }
      ContinuousSession* session = state_->session.get();
      auto finished = std::make_shared<std::vector<FinishedSequence>>();
      busy_ = true;
      return queue_async(info.Env(), {op, [session, n, finished] { *finished = session->step(n); }, {info.This()},
                                      [finished](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                                        return finished_sequences(env, *finished);
                                      },
                                      [this] {
                                        busy_ = false;
                                        if (disposed_) state_.reset();
                                        else sync();
                                      }});
    });
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    if (state_) state_->session->cancel();
    disposed_ = done_ = true;
    if (!busy_) state_.reset();
    return info.Env().Undefined();
  }

  Napi::Value done(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), done_); }
  Napi::Value remaining(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(remaining_)); }

  std::unique_ptr<ContinuousState> state_;
  int64_t remaining_ = 0;
  bool busy_ = false, done_ = false, disposed_ = false;
};

}  // namespace

Napi::Value wrap_continuous_decoder(Napi::Env env, std::shared_ptr<ReaderLease> lease, std::unique_ptr<ContinuousSession> session) {
  auto* state = new ContinuousState{std::move(lease), std::move(session)};
  return addon_data(env).continuous_class.Value().New({Napi::External<ContinuousState>::New(env, state)});
}

Napi::Value wrap_decoder(Napi::Env env, std::shared_ptr<ReaderLease> lease, std::unique_ptr<DecodeSession> session) {
  auto* state = new DecoderState{std::move(lease), std::move(session)};
  return addon_data(env).decoder_class.Value().New({Napi::External<DecoderState>::New(env, state)});
}

void register_decoder(Napi::Env env, Napi::Object exports, Signatures& signatures) {
  Napi::Function cls = Decoder::define(env, signatures);
  addon_data(env).decoder_class = Napi::Persistent(cls);
  exports.Set("Decoder", cls);
  Napi::Function continuous = ContinuousDecoder::define(env, signatures);
  addon_data(env).continuous_class = Napi::Persistent(continuous);
  exports.Set("ContinuousDecoder", continuous);
}

}  // namespace jfa::binding
