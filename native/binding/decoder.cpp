#include "binding/decoder.h"

#include <ATen/ops/empty.h>

#include <utility>
#include <vector>

#include "binding/tensor.h"
#include "binding/worker.h"

namespace jfa::binding {
namespace {

// What a live decoder owns; the session is destroyed before the lease ends.
template <typename Session>
struct SessionState {
  std::shared_ptr<ReaderLease> lease;
  std::unique_ptr<Session> session;
};
using DecoderState = SessionState<DecodeSession>;
using ContinuousState = SessionState<ContinuousSession>;

// The life both decoders share: one step at a time on the worker; the session (its cache, and the
// model's lease) is freed once done or disposed, by the running step's release when one runs.
// Derived reads its progress in read_progress(const Session&).
template <typename Derived, typename Session>
class SessionWrap : public CheckedWrap<Derived> {
 protected:
  SessionWrap(const Napi::CallbackInfo& info, const char* made_by) : CheckedWrap<Derived>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) throw Napi::TypeError::New(info.Env(), made_by);
    state_.reset(info[0].template As<Napi::External<SessionState<Session>>>().Data());
  }

  // Reads the session's progress; a finished session is freed now.
  void sync() {
    static_cast<Derived*>(this)->read_progress(*state_->session);
    if (state_->session->done()) {
      done_ = true;
      if (!busy_) state_.reset();  // else the running step's release frees it
    }
  }

  // The session to act on; throws for a disposed decoder or while a step runs; null once done.
  Session* ready(const char* op) const {
    if (disposed_) throw Napi::TypeError::New(this->Env(), std::string(op) + ": the decoder is disposed");
    if (busy_) throw Napi::Error::New(this->Env(), std::string(op) + ": a step is running; await it first");
    return done_ ? nullptr : state_->session.get();
  }

  // Runs `work(session)` on the worker; the Promise resolves to convert(env, its result). The JS
  // object is kept until the step settles, so `this` and the session outlive the work.
  template <typename Result, typename Work, typename Convert>
  Napi::Value queue_step(const Napi::CallbackInfo& info, const char* op, Session* session, Work work, Convert convert) {
    auto result = std::make_shared<Result>();
    busy_ = true;
    return queue_async(info.Env(), {op, [session, work, result] { *result = work(*session); }, {info.This()},
                                    [result, convert](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                                      return convert(env, *result);
                                    },
                                    [this] {
                                      busy_ = false;
                                      if (disposed_) state_.reset();
                                      else sync();
                                    }});
  }

  static Napi::Value resolved(Napi::Env env, Napi::Value value) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Resolve(value);
    return deferred.Promise();
  }

  // A running step returns after its current token; its memory and the model's lease go then.
  Napi::Value dispose_session(const Napi::CallbackInfo& info) {
    if (state_) state_->session->cancel();
    disposed_ = done_ = true;
    if (!busy_) state_.reset();
    return info.Env().Undefined();
  }

  bool done_ = false;

 private:
  std::unique_ptr<SessionState<Session>> state_;
  bool busy_ = false, disposed_ = false;
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

class Decoder : public SessionWrap<Decoder, DecodeSession> {
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

  explicit Decoder(const Napi::CallbackInfo& info)
      : SessionWrap(info, "Decoder: made by model.decoderAsync(ids, options), not by new") {
    sync();
  }

  void read_progress(const DecodeSession& session) {
    batch_ = session.batch_size();
    produced_ = session.produced();
  }

 private:
  Napi::Value step_async(const Napi::CallbackInfo& info) {
    const char* op = "decoder.step";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const int64_t n = int_arg(info, 0, op, "n", 1, 1);
      DecodeSession* session = ready(op);
      if (!session) return resolved(info.Env(), token_rows(info.Env(), at::empty({batch_, 0}, at::kLong)));
      return queue_step<at::Tensor>(info, op, session, [n](DecodeSession& s) { return s.step(n); }, token_rows);
    });
  }

  Napi::Value stop(const Napi::CallbackInfo& info) {
    const char* op = "decoder.stop";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const std::vector<int64_t> rows = int_list_arg(info, 0, op, "rows");
      if (DecodeSession* session = ready(op)) {
        session->stop(rows);
        sync();
      }
      return info.Env().Undefined();
    });
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) { return dispose_session(info); }
  Napi::Value done(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), done_); }
  Napi::Value batch_size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(batch_)); }
  Napi::Value produced(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(produced_)); }

  int64_t batch_ = 0, produced_ = 0;
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

class ContinuousDecoder : public SessionWrap<ContinuousDecoder, ContinuousSession> {
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

  explicit ContinuousDecoder(const Napi::CallbackInfo& info)
      : SessionWrap(info, "ContinuousDecoder: made by model.continuousDecoderAsync(ids, lengths, options), not by new") {
    sync();
  }

  void read_progress(const ContinuousSession& session) { remaining_ = session.remaining(); }

 private:
  Napi::Value step_async(const Napi::CallbackInfo& info) {
    const char* op = "continuous.step";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const int64_t n = int_arg(info, 0, op, "n", 1, 1);
      ContinuousSession* session = ready(op);
      if (!session) return resolved(info.Env(), Napi::Array::New(info.Env()));
      return queue_step<std::vector<FinishedSequence>>(info, op, session, [n](ContinuousSession& s) { return s.step(n); },
                                                       finished_sequences);
    });
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) { return dispose_session(info); }
  Napi::Value done(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), done_); }
  Napi::Value remaining(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(remaining_)); }

  int64_t remaining_ = 0;
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
