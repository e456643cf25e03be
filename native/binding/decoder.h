#pragma once
// The Decoder handle exported to JS: a generation in progress (core/decode_session.h), made by
// Model#decoderAsync and stepped from JS a few tokens at a time (streaming, stop strings, abort);
// and the ContinuousDecoder, continuous batching's (core/continuous_session.h), made by
// Model#continuousDecoderAsync and stepped the same way.
#include <napi.h>

#include <memory>

#include "binding/boundary.h"
#include "binding/model.h"
#include "core/continuous_session.h"
#include "core/decode_session.h"

namespace jfa::binding {

// A new JS Decoder owning `session`, which runs on lease's model: the lease ends when the session
// is done or the Decoder disposed (or collected).
Napi::Value wrap_decoder(Napi::Env env, std::shared_ptr<ReaderLease> lease, std::unique_ptr<DecodeSession> session);

// A new JS ContinuousDecoder owning `session`, as wrap_decoder.
Napi::Value wrap_continuous_decoder(Napi::Env env, std::shared_ptr<ReaderLease> lease, std::unique_ptr<ContinuousSession> session);

void register_decoder(Napi::Env env, Napi::Object exports, Signatures& signatures);

}  // namespace jfa::binding
