#pragma once
// The Model class exported to JS, and what other handles (the optimizer's training step) need of it.
#include <napi.h>

#include <memory>
#include <optional>
#include <string>

#include "binding/boundary.h"
#include "core/llama.h"

namespace jfa::binding {

// Who is using a model on worker threads; read and written on the main thread only. Readers
// (generation, async forwards) may overlap each other; a training step runs alone, and changes to
// the model's structure wait for all of them.
struct ModelUse {
  int readers = 0;
  bool training = false;
};

struct ModelRef {
  std::shared_ptr<LlamaModel> model;
  std::shared_ptr<ModelUse> use;
};

// options.latent ({indices, weights}) of a forward pass or a training micro-batch, if given.
std::optional<LatentCall> latent_option(const Options& o);

// The live model behind JS Model object `v`, or a TypeError naming `where`.
ModelRef model_arg(Napi::Env env, const Napi::Value& v, const std::string& where);

void register_model(Napi::Env env, Napi::Object exports, Signatures& signatures);

}  // namespace jfa::binding
