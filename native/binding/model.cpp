// The Llama model handle exported to JS.
#include "binding/model.h"

#include <ATen/core/grad_mode.h>

#include <memory>
#include <utility>

#include "binding/decoder.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "core/ops.h"
#include "core/regularizers.h"

namespace jfa::binding {
namespace {

// Forward-pass options shared by logits, hiddenStates, meanPooled and generate.
struct ForwardOptions {
  at::Tensor mask;
  bool adapters = true;
  std::optional<LatentCall> latent;
};

ForwardOptions forward_options(const Options& o) {
  ForwardOptions f;
  f.mask = o.optional_tensor("attentionMask");
  f.adapters = o.boolean("adapters", true);
  f.latent = latent_option(o);
  return f;
}

// Options of generate and of a Decoder (lib/model/llama.ts checks them first, with the public names).
GenerateOptions generate_options(const Options& o) {
  GenerateOptions g;
  g.max_new_tokens = o.integer("maxNewTokens", 32, 1);
  g.temperature = o.number("temperature", 0.0);
  g.top_p = o.number("topP", 1.0);
  g.top_k = o.integer("topK", 0, 0);
  g.repetition_penalty = o.number("repetitionPenalty", 1.0);
  g.seed = o.seed("seed");
  g.eos_token_ids = o.integers("eosTokenIds");
  g.pad_token_id = o.integer("padTokenId", 0, 0);
  return g;
}

class Model : public CheckedWrap<Model> {
 public:
  static Napi::Function define(Napi::Env env, Signatures& sig) {
    return DefineClass(env, "Model",
                       {
                           static_method<&Model::load, 2>(sig, "Model", "load", "loadModel"),
                           static_method<&Model::load_async, 2>(sig, "Model", "loadAsync", "loadModel"),
                           static_method<&Model::random, 3>(sig, "Model", "random", "createModel"),
                           InstanceAccessor<&Model::config>("config"),
                           InstanceAccessor<&Model::dtype>("dtype"),
                           InstanceAccessor<&Model::device>("device"),
                           method<&Model::to_device, 1>(sig, "Model", "toDevice", "model.toDevice"),
                           InstanceAccessor<&Model::parameter_count>("parameterCount"),
                           method<&Model::logits, 2>(sig, "Model", "logits", "model.logits"),
                           method<&Model::logits_async, 2>(sig, "Model", "logitsAsync", "model.logitsAsync"),
                           method<&Model::hidden_states, 2>(sig, "Model", "hiddenStates", "model.hiddenStates"),
                           method<&Model::head, 2>(sig, "Model", "head", "model.head"),
                           method<&Model::mean_pooled, 2>(sig, "Model", "meanPooled", "model.meanPooled"),
                           method<&Model::generate_async, 2>(sig, "Model", "generateAsync", "generate"),
                           method<&Model::decoder_async, 2>(sig, "Model", "decoderAsync", "decoder"),
                           method<&Model::continuous_decoder_async, 3>(sig, "Model", "continuousDecoderAsync", "continuous"),
                           method<&Model::merge_lora, 0>(sig, "Model", "mergeLora", "mergeLora"),
                           method<&Model::stack_lora, 0>(sig, "Model", "stackLora", "stackLora"),
                           method<&Model::remove_lora, 0>(sig, "Model", "removeLora", "removeLora"),
                           InstanceAccessor<&Model::stacked_count>("stackedAdapters"),
                           method<&Model::weights, 0>(sig, "Model", "weights", "weights"),
                           method<&Model::set_base_trainable, 1>(sig, "Model", "setBaseTrainable", "setBaseTrainable"),
                           InstanceAccessor<&Model::checkpointing, &Model::set_checkpointing>("activationCheckpointing"),
                           method<&Model::add_lora, 2>(sig, "Model", "addLora", "addLora"),
                           method<&Model::set_latent_pool, 3>(sig, "Model", "setLatentPool", "setLatentPool"),
                           method<&Model::lora_parameters, 0>(sig, "Model", "loraParameters", "loraParameters"),
                           method<&Model::fisher_async, 2>(sig, "Model", "fisherDiagonalAsync", "fisherDiagonal"),
                           method<&Model::dispose, 0>(sig, "Model", "dispose", "model.dispose"),
                       });
  }

  explicit Model(const Napi::CallbackInfo& info) : CheckedWrap<Model>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "Model: use Model.load(dir, dtype)");
    model_.reset(info[0].As<Napi::External<LlamaModel>>().Data());
  }

  ModelRef ref(Napi::Env env, const std::string& where) const {
    if (!model_) throw Napi::TypeError::New(env, where + " is a disposed model");
    return {model_, use_};
  }

 private:
  static Napi::Value wrap_new(const Napi::Value& ctor, std::unique_ptr<LlamaModel> model) {
    return ctor.As<Napi::Function>().New({Napi::External<LlamaModel>::New(ctor.Env(), model.release())});
  }

  static std::string dir_arg(const Napi::CallbackInfo& info, const char* op) {
    if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": dir must be a string, got " + describe(info[0]));
    if (!info.This().IsFunction()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": call it as Model.load(dir)");
    return info[0].As<Napi::String>().Utf8Value();
  }

  static Napi::Value load(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "loadModel", [&]() -> Napi::Value {
      const std::string dir = dir_arg(info, "loadModel");
      return wrap_new(info.This(), LlamaModel::load(dir, dtype_arg(info, 1, "loadModel", c10::kFloat)));
    });
  }

  static Napi::Value load_async(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "loadModel", [&]() -> Napi::Value {
      const std::string dir = dir_arg(info, "loadModel");
      const auto dtype = dtype_arg(info, 1, "loadModel", c10::kFloat);
      auto loaded = std::make_shared<std::unique_ptr<LlamaModel>>();
      return queue_async(info.Env(), {"loadModel", [dir, dtype, loaded] { *loaded = LlamaModel::load(dir, dtype); }, {info.This()},
                                      [loaded](Napi::Env, const std::vector<Napi::Value>& kept) -> Napi::Value {
                                        return wrap_new(kept[0], std::move(*loaded));
                                      },
                                      nullptr});
    });
  }

  static Napi::Value random(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "createModel", [&]() -> Napi::Value {
      if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "createModel: config must be a JSON string, got " + describe(info[0]));
      if (!info.This().IsFunction()) throw Napi::TypeError::New(info.Env(), "createModel: call it as Model.random(config)");
      const LlamaConfig config = LlamaConfig::parse(info[0].As<Napi::String>().Utf8Value(), "createModel: config");
      return wrap_new(info.This(), LlamaModel::random(config, seed_arg(info, 1, "createModel").value_or(0),
                                                      number_arg(info, 2, "createModel", "initStd", 0.02)));
    });
  }

  const LlamaModel& live(const char* op) const {
    if (!model_) throw Napi::TypeError::New(Env(), std::string(op) + ": the model is disposed");
    return *model_;
  }
  // A synchronous forward reads the trainable weights, which a running training step updates.
  const LlamaModel& readable(const char* op) const {
    const LlamaModel& m = live(op);
    if (use_->training) throw Napi::Error::New(Env(), std::string(op) + ": the model is training; await the step first");
    return m;
  }
  // Changes to the model's structure while a worker thread reads it would race.
  LlamaModel& changeable(const char* op) const {
    live(op);
    if (use_->training) throw Napi::Error::New(Env(), std::string(op) + ": the model is training; await the step before changing it");
    if (use_->readers > 0)
      throw Napi::Error::New(Env(), std::string(op) + ": the model is generating; await generate() before changing it (a Decoder: finish or dispose it)");
    return *model_;
  }

  Napi::Value config(const Napi::CallbackInfo& info) {
    const LlamaConfig& c = live("config").config();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("vocabSize", static_cast<double>(c.vocab_size));
    o.Set("hiddenSize", static_cast<double>(c.hidden_size));
    o.Set("intermediateSize", static_cast<double>(c.intermediate_size));
    o.Set("numLayers", static_cast<double>(c.num_hidden_layers));
    o.Set("numHeads", static_cast<double>(c.num_attention_heads));
    o.Set("numKeyValueHeads", static_cast<double>(c.num_key_value_heads));
    o.Set("headDim", static_cast<double>(c.head_dim));
    o.Set("tieWordEmbeddings", c.tie_word_embeddings);
    o.Set("llama3RopeScaling", c.llama3_rope);
    o.Set("modelType", c.model_type);
    o.Set("slidingWindow", c.sliding_window > 0 ? Napi::Value(Napi::Number::New(info.Env(), static_cast<double>(c.sliding_window))) : info.Env().Null());
    const std::vector<std::string> modules = live("config").linear_modules();
    Napi::Array list = Napi::Array::New(info.Env(), modules.size());
    for (size_t i = 0; i < modules.size(); ++i) list.Set(static_cast<uint32_t>(i), modules[i]);
    o.Set("linearModules", list);
    return o;
  }

  Napi::Value dtype(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtype_name(live("dtype").dtype())); }

  Napi::Value device(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), live("device").device().str()); }

  // Moves the whole model (weights, adapters, latent pools) to a device, in place.
  Napi::Value to_device(const Napi::CallbackInfo& info) {
    const char* op = "model.toDevice";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      if (info[0].IsUndefined()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": device is required");
      const c10::Device device = device_arg(info, 0, op);
      changeable(op).to(device);
      return info.Env().Undefined();
    });
  }

  Napi::Value parameter_count(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live("parameterCount").parameter_count()));
  }

  Napi::Value set_latent_pool(const Napi::CallbackInfo& info) {
    const char* op = "setLatentPool";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      LlamaModel& m = changeable(op);
      m.set_latent_pool(int_arg(info, 0, op, "layer", -1), tensor_arg(info, 1, op, "A"), tensor_arg(info, 2, op, "B"));
      return info.Env().Undefined();
    });
  }

  Napi::Value logits(const Napi::CallbackInfo& info) {
    const char* op = "model.logits";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const auto& ids = tensor_arg(info, 0, op, "ids");
      const ForwardOptions f = forward_options(Options(info, 1, op));
      return tensor_handle::wrap(info.Env(), readable(op).logits(ids, f.mask, f.adapters, f.latent ? &*f.latent : nullptr));
    });
  }

  // A reader on the libuv pool: the lease ends when the promise settles.
  Napi::Value queue_reader(Napi::Env env, const char* op, std::function<at::Tensor(const LlamaModel&)> fn) {
    readable(op);
    auto result = std::make_shared<at::Tensor>();
    ++use_->readers;
    return queue_async(env, {op, [model = model_, fn = std::move(fn), result] { *result = fn(*model); }, {},
                             [result](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                               return tensor_handle::wrap(env, std::move(*result));
                             },
                             [use = use_] { --use->readers; }});
  }

  Napi::Value logits_async(const Napi::CallbackInfo& info) {
    const char* op = "model.logitsAsync";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      at::Tensor ids = tensor_arg(info, 0, op, "ids");
      ForwardOptions f = forward_options(Options(info, 1, op));
      // Scoring: no graph is kept (the result does not require gradients).
      return queue_reader(info.Env(), op, [ids, f = std::move(f)](const LlamaModel& m) {
        at::NoGradGuard no_grad;
        return m.logits(ids, f.mask, f.adapters, f.latent ? &*f.latent : nullptr);
      });
    });
  }

  Napi::Value hidden_states(const Napi::CallbackInfo& info) {
    const char* op = "model.hiddenStates";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const auto& ids = tensor_arg(info, 0, op, "ids");
      const ForwardOptions f = forward_options(Options(info, 1, op));
      return tensor_handle::wrap(info.Env(), readable(op).hidden_states(ids, f.mask, f.adapters, f.latent ? &*f.latent : nullptr));
    });
  }

  Napi::Value head(const Napi::CallbackInfo& info) {
    const char* op = "model.head";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const auto& hidden = tensor_arg(info, 0, op, "hidden");
      const at::Tensor rows = optional_tensor_arg(info, 1, op, "rows");
      return tensor_handle::wrap(info.Env(), readable(op).head(hidden, rows));
    });
  }

  Napi::Value mean_pooled(const Napi::CallbackInfo& info) {
    const char* op = "model.meanPooled";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      const auto& ids = tensor_arg(info, 0, op, "ids");
      const ForwardOptions f = forward_options(Options(info, 1, op));
      if (f.latent) throw Napi::TypeError::New(info.Env(), std::string(op) + ": latent tasks do not apply to retrieval embeddings");
      return tensor_handle::wrap(info.Env(), readable(op).mean_pooled(ids, f.mask, f.adapters));
    });
  }

  Napi::Value generate_async(const Napi::CallbackInfo& info) {
    const char* op = "generate";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      at::Tensor ids = tensor_arg(info, 0, op, "ids");
      const Options o(info, 1, op);
      ForwardOptions f = forward_options(o);
      GenerateOptions g = generate_options(o);
      return queue_reader(info.Env(), op, [ids, f = std::move(f), g = std::move(g)](const LlamaModel& m) {
        return m.generate(ids, f.mask, g, f.adapters, f.latent ? &*f.latent : nullptr);
      });
    });
  }

  // A Decoder after the prompt's prefill: the lease it takes now holds the model unchanged until the
  // decoder is done or disposed.
  Napi::Value decoder_async(const Napi::CallbackInfo& info) {
    const char* op = "decoder";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      at::Tensor ids = tensor_arg(info, 0, op, "ids");
      const Options o(info, 1, op);
      ForwardOptions f = forward_options(o);
      GenerateOptions g = generate_options(o);
      readable(op);
      auto lease = std::make_shared<ReaderLease>(model_, use_);
      auto session = std::make_shared<std::unique_ptr<DecodeSession>>();
      return queue_async(info.Env(), {op,
                                      [lease, session, ids, f = std::move(f), g = std::move(g), op] {
                                        *session = std::make_unique<DecodeSession>(*lease->model, ids, f.mask, g, f.adapters,
                                                                                   f.latent ? &*f.latent : nullptr, op);
                                      },
                                      {},
                                      [lease, session](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                                        return wrap_decoder(env, lease, std::move(*session));
                                      },
                                      nullptr});
    });
  }

  // fisherDiagonalAsync(ids, {attentionMask, targets}): EWC's Fisher of the adapted layers' base
  // weights. The model is leased as training meanwhile: the weights record gradients for the call.
  Napi::Value fisher_async(const Napi::CallbackInfo& info) {
    const char* op = "fisherDiagonal";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      at::Tensor ids = tensor_arg(info, 0, op, "ids");
      const Options o(info, 1, op, "options", true);
      at::Tensor mask = o.optional_tensor("attentionMask");
      at::Tensor targets = o.tensor("targets");
      changeable(op);
      auto result = std::make_shared<std::vector<at::Tensor>>();
      use_->training = true;
      return queue_async(info.Env(), {op, [model = model_, ids, mask, targets, result] { *result = fisher_diagonal(*model, ids, mask, targets); }, {},
                                      [result](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                                        auto out = Napi::Array::New(env, result->size());
                                        for (uint32_t i = 0; i < result->size(); ++i) out.Set(i, tensor_handle::wrap(env, (*result)[i]));
                                        return out;
                                      },
                                      [use = use_] { use->training = false; }});
    });
  }

  // A ContinuousDecoder on the prompts `ids` (concatenated, int64) of `lengths`; options as a
  // Decoder's plus `slots`. Its lease holds the model unchanged until it is done or disposed.
  Napi::Value continuous_decoder_async(const Napi::CallbackInfo& info) {
    const char* op = "continuous";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      at::Tensor ids = tensor_arg(info, 0, op, "ids");
      std::vector<int64_t> lengths = int_list_arg(info, 1, op, "lengths");
      const Options o(info, 2, op);
      ForwardOptions f = forward_options(o);
      GenerateOptions g = generate_options(o);
      const int64_t slots = o.required_integer("slots", 1);
      readable(op);
      auto lease = std::make_shared<ReaderLease>(model_, use_);
      auto session = std::make_shared<std::unique_ptr<ContinuousSession>>();
      return queue_async(info.Env(), {op,
                                      [lease, session, ids, lengths = std::move(lengths), slots, f = std::move(f), g = std::move(g), op] {
                                        *session = std::make_unique<ContinuousSession>(*lease->model, ids, lengths, slots, g, f.adapters,
                                                                                       f.latent ? &*f.latent : nullptr, op);
                                      },
                                      {},
                                      [lease, session](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                                        return wrap_continuous_decoder(env, lease, std::move(*session));
                                      },
                                      nullptr});
    });
  }

  Napi::Value merge_lora(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "mergeLora", [&]() -> Napi::Value {
      changeable("mergeLora").merge_lora();
      return info.Env().Undefined();
    });
  }

  Napi::Value remove_lora(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "removeLora", [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), static_cast<double>(changeable("removeLora").remove_lora()));
    });
  }

  Napi::Value stack_lora(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "stackLora", [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), static_cast<double>(changeable("stackLora").stack_lora()));
    });
  }

  Napi::Value stacked_count(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "stackedAdapters", [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), static_cast<double>(live("stackedAdapters").stacked_count()));
    });
  }

  Napi::Value set_base_trainable(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "setBaseTrainable", [&]() -> Napi::Value {
      changeable("setBaseTrainable").set_base_trainable(bool_arg(info, 0, "setBaseTrainable", "trainable", true));
      return info.Env().Undefined();
    });
  }

  Napi::Value checkpointing(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "activationCheckpointing", [&]() -> Napi::Value {
      return Napi::Boolean::New(info.Env(), live("activationCheckpointing").checkpointing());
    });
  }

  void set_checkpointing(const Napi::CallbackInfo& info, const Napi::Value& value) {
    guard(info.Env(), "activationCheckpointing", [&]() -> Napi::Value {
      if (!value.IsBoolean())
        throw Napi::TypeError::New(info.Env(), "activationCheckpointing must be a boolean, got " + describe(value));
      changeable("activationCheckpointing").set_checkpointing(value.As<Napi::Boolean>().Value());
      return info.Env().Undefined();
    });
  }

  Napi::Value weights(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "weights", [&]() -> Napi::Value {
      Napi::Object out = Napi::Object::New(info.Env());
      for (const auto& [name, t] : live("weights").weights()) out.Set(name, tensor_handle::wrap(info.Env(), t));
      return out;
    });
  }

  Napi::Value add_lora(const Napi::CallbackInfo& info) {
    const char* op = "addLora";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      LlamaModel& m = changeable(op);
      if (!info[0].IsArray()) throw Napi::TypeError::New(info.Env(), "addLora: targets must be an array of module names, got " + describe(info[0]));
      std::vector<std::string> targets;
      const auto list = info[0].As<Napi::Array>();
      for (uint32_t i = 0; i < list.Length(); ++i) {
        const Napi::Value v = list.Get(i);
        if (!v.IsString()) throw Napi::TypeError::New(info.Env(), "addLora: targets[" + std::to_string(i) + "] must be a string, got " + describe(v));
        targets.push_back(v.As<Napi::String>().Utf8Value());
      }
      const Options o(info, 1, op);
      m.add_lora(targets, o.integer("r", 8, 1), o.number("loraAlpha", 16), o.boolean("rslora", false), o.seed("seed").value_or(0));
      return info.Env().Undefined();
    });
  }

  Napi::Value lora_parameters(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "loraParameters", [&]() -> Napi::Value {
      Napi::Object out = Napi::Object::New(info.Env());
      for (const auto& [name, t] : live("loraParameters").lora_parameters()) out.Set(name, tensor_handle::wrap(info.Env(), t));
      return out;
    });
  }

  // Work running on the model holds its own reference: the weights are freed when it ends.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<LlamaModel> model_;
  std::shared_ptr<ModelUse> use_ = std::make_shared<ModelUse>();
};

}  // namespace

std::optional<LatentCall> latent_option(const Options& o) {
  const auto latent = o.object("latent");
  if (!latent) return std::nullopt;
  return LatentCall{latent->tensor("indices"), latent->tensor("weights")};
}

ModelRef model_arg(Napi::Env env, const Napi::Value& v, const std::string& where) {
  const Napi::FunctionReference& ctor = addon_data(env).model_class;
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(ctor.Value()))
    throw Napi::TypeError::New(env, where + " must be a Model, got " + describe(v));
  return Model::Unwrap(v.As<Napi::Object>())->ref(env, where);
}

void register_model(Napi::Env env, Napi::Object exports, Signatures& signatures) {
  Napi::Function cls = Model::define(env, signatures);
  addon_data(env).model_class = Napi::Persistent(cls);
  exports.Set("Model", cls);
}

}  // namespace jfa::binding
