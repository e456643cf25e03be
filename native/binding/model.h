#pragma once
// The Model class exported to JS, and what other handles (the optimizer's training step) need of it.
#include <napi.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

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

// A reader's hold on a model (generation under way): counted in ModelUse::readers while it lives.
// Made and dropped on the main thread (async work drops its closure there).
struct ReaderLease {
  std::shared_ptr<LlamaModel> model;
  std::shared_ptr<ModelUse> use;
  ReaderLease(std::shared_ptr<LlamaModel> m, std::shared_ptr<ModelUse> u) : model(std::move(m)), use(std::move(u)) { ++use->readers; }
  ~ReaderLease() { --use->readers; }
  ReaderLease(const ReaderLease&) = delete;
  ReaderLease& operator=(const ReaderLease&) = delete;
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
