// The Llama model handle exported to JS.
#include <napi.h>

#include <memory>

#include "binding/boundary.h"
#include "binding/model.h"
#include "binding/tensor.h"
#include "core/llama.h"
#include "core/ops.h"
#include "core/runtime.h"

namespace jfa::binding {
namespace {

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "Model",
                       {
                           StaticMethod<&Model::load>("load"),
                           StaticMethod<&Model::random>("random"),
                           InstanceAccessor<&Model::config>("config"),
                           InstanceAccessor<&Model::dtype>("dtype"),
                           InstanceAccessor<&Model::parameter_count>("parameterCount"),
                           InstanceMethod<&Model::logits>("logits"),
                           InstanceMethod<&Model::hidden_states>("hiddenStates"),
                           InstanceMethod<&Model::head>("head"),
                           InstanceMethod<&Model::mean_pooled>("meanPooled"),
                           InstanceMethod<&Model::generate_async>("generateAsync"),
                           InstanceMethod<&Model::merge_lora>("mergeLora"),
                           InstanceMethod<&Model::weights>("weights"),
                           InstanceMethod<&Model::set_base_trainable>("setBaseTrainable"),
                           InstanceMethod<&Model::add_lora>("addLora"),
                           InstanceMethod<&Model::set_latent_pool>("setLatentPool"),
                           InstanceMethod<&Model::lora_parameters>("loraParameters"),
                           InstanceMethod<&Model::dispose>("dispose"),
                       });
  }

  explicit Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "Model: use Model.load(dir, dtype)");
    model_.reset(info[0].As<Napi::External<LlamaModel>>().Data());
  }

  // A generation task: holds the model by shared_ptr, so dispose() while it runs is safe.
  class GenerateTask : public Napi::AsyncWorker {
   public:
    GenerateTask(Napi::Env env, std::shared_ptr<const LlamaModel> model, std::shared_ptr<int> running, at::Tensor ids,
                 at::Tensor mask, GenerateOptions options, bool adapters, std::optional<LatentCall> latent)
        : Napi::AsyncWorker(env, "generate"),
          model_(std::move(model)),
          running_(std::move(running)),
          ids_(std::move(ids)),
          mask_(std::move(mask)),
          options_(std::move(options)),
          adapters_(adapters),
          latent_(std::move(latent)),
          deferred_(Napi::Promise::Deferred::New(env)) {}
    Napi::Promise promise() const { return deferred_.Promise(); }

   protected:
    void Execute() override {
      try {
        apply_threads();
        result_ = model_->generate(ids_, mask_, options_, adapters_, latent_ ? &*latent_ : nullptr);
      } catch (...) {
        failure_ = describe_current_exception("generate");
        SetError(failure_.message);
      }
    }
    void OnOK() override {
      --*running_;
      deferred_.Resolve(tensor_handle::wrap(Env(), std::move(result_)));
    }
    void OnError(const Napi::Error&) override {
      --*running_;
      deferred_.Reject(js_error(Env(), failure_).Value());
    }

   private:
    std::shared_ptr<const LlamaModel> model_;
    std::shared_ptr<int> running_;  // touched on the main thread only
    at::Tensor ids_, mask_, result_;
    GenerateOptions options_;
    bool adapters_;
    // Its own references to the latent tensors: JS may dispose its handles while this runs.
    std::optional<LatentCall> latent_;
    Napi::Promise::Deferred deferred_;
    Failure failure_{ErrorKind::Generic, ""};
  };

 private:
  static Napi::Value load(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "loadModel", [&]() -> Napi::Value {
      if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "loadModel: dir must be a string, got " + describe(info[0]));
      const auto dtype = dtype_arg(info, 1, "loadModel", c10::kFloat);
      auto model = LlamaModel::load(info[0].As<Napi::String>().Utf8Value(), dtype);
      auto ctor = info.This().As<Napi::Function>();
      return ctor.New({Napi::External<LlamaModel>::New(info.Env(), model.release())});
    });
  }

  static Napi::Value random(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "createModel", [&]() -> Napi::Value {
      if (!info[0].IsString()) throw Napi::TypeError::New(info.Env(), "createModel: config must be a JSON string, got " + describe(info[0]));
      const LlamaConfig config = LlamaConfig::parse(info[0].As<Napi::String>().Utf8Value(), "createModel: config");
      auto model = LlamaModel::random(config, seed_arg(info, 1, "createModel").value_or(0), number_arg(info, 2, "createModel", "initStd", 0.02));
      auto ctor = info.This().As<Napi::Function>();
      return ctor.New({Napi::External<LlamaModel>::New(info.Env(), model.release())});
    });
  }

  const LlamaModel& live(const char* op) const {
    if (!model_) throw Napi::TypeError::New(Env(), std::string(op) + ": the model is disposed");
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
    return o;
  }

  Napi::Value dtype(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtype_name(live("dtype").dtype())); }

  Napi::Value parameter_count(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(live("parameterCount").parameter_count()));
  }

  // The optional {indices, weights} of a forward pass's latent tasks.
  static std::optional<LatentCall> latent_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
    const Napi::Value v = info[i];
    if (v.IsUndefined() || v.IsNull()) return std::nullopt;
    if (!v.IsObject()) throw Napi::TypeError::New(info.Env(), std::string(op) + ": latent must be {indices, weights}, got " + describe(v));
    const Napi::Object o = v.As<Napi::Object>();
    const auto field = [&](const char* name) {
      const at::Tensor* t = tensor_handle::unwrap(info.Env(), o.Get(name));
      if (!t) throw Napi::TypeError::New(info.Env(), std::string(op) + ": latent." + name + " must be a live Tensor, got " + describe(o.Get(name)));
      return *t;
    };
    return LatentCall{field("indices"), field("weights")};
  }

  Napi::Value set_latent_pool(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "setLatentPool", [&]() -> Napi::Value {
      check_idle("setLatentPool");
      const double layer = number_arg(info, 0, "setLatentPool", "layer", -1);
      model_->set_latent_pool(static_cast<int64_t>(layer), tensor_arg(info, 1, "setLatentPool", "A"), tensor_arg(info, 2, "setLatentPool", "B"));
      return info.Env().Undefined();
    });
  }

  Napi::Value logits(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "model.logits", [&]() -> Napi::Value {
      const auto& ids = tensor_arg(info, 0, "model.logits", "ids");
      const at::Tensor mask = optional_tensor_arg(info, 1, "model.logits", "attentionMask");
      const bool adapters = bool_arg(info, 2, "model.logits", "adapters", true);
      const auto latent = latent_arg(info, 3, "model.logits");
      return tensor_handle::wrap(info.Env(), live("model.logits").logits(ids, mask, adapters, latent ? &*latent : nullptr));
    });
  }

  Napi::Value hidden_states(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "model.hiddenStates", [&]() -> Napi::Value {
      const auto& ids = tensor_arg(info, 0, "model.hiddenStates", "ids");
      const at::Tensor mask = optional_tensor_arg(info, 1, "model.hiddenStates", "attentionMask");
      const bool adapters = bool_arg(info, 2, "model.hiddenStates", "adapters", true);
      const auto latent = latent_arg(info, 3, "model.hiddenStates");
      return tensor_handle::wrap(info.Env(), live("model.hiddenStates").hidden_states(ids, mask, adapters, latent ? &*latent : nullptr));
    });
  }

  Napi::Value head(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "model.head", [&]() -> Napi::Value {
      const auto& hidden = tensor_arg(info, 0, "model.head", "hidden");
      const at::Tensor rows = optional_tensor_arg(info, 1, "model.head", "rows");
      return tensor_handle::wrap(info.Env(), live("model.head").head(hidden, rows));
    });
  }

  Napi::Value mean_pooled(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "model.meanPooled", [&]() -> Napi::Value {
      const auto& ids = tensor_arg(info, 0, "model.meanPooled", "ids");
      const at::Tensor mask = optional_tensor_arg(info, 1, "model.meanPooled", "attentionMask");
      const bool adapters = bool_arg(info, 2, "model.meanPooled", "adapters", true);
      return tensor_handle::wrap(info.Env(), live("model.meanPooled").mean_pooled(ids, mask, adapters));
    });
  }

  Napi::Value generate_async(const Napi::CallbackInfo& info) {
    const char* op = "generate";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      live(op);
      at::Tensor ids = tensor_arg(info, 0, op, "ids");
      at::Tensor mask = optional_tensor_arg(info, 1, op, "attentionMask");
      GenerateOptions o;
      const double n = number_arg(info, 2, op, "maxNewTokens", 32);
      if (n < 1 || n != static_cast<double>(static_cast<int64_t>(n)))
        throw Napi::RangeError::New(info.Env(), std::string(op) + ": maxNewTokens must be a positive integer, got " + describe(info[2]));
      o.max_new_tokens = static_cast<int64_t>(n);
      o.temperature = number_arg(info, 3, op, "temperature", 0.0);
      o.top_p = number_arg(info, 4, op, "topP", 1.0);
      o.seed = seed_arg(info, 5, op);
      o.eos_token_ids = int_list_arg(info, 6, op, "eosTokenIds");
      o.pad_token_id = static_cast<int64_t>(number_arg(info, 7, op, "padTokenId", 0));
      const bool adapters = bool_arg(info, 8, op, "adapters", true);
      auto latent = latent_arg(info, 9, op);
      auto* task = new GenerateTask(info.Env(), model_, running_, ids, mask, std::move(o), adapters, std::move(latent));
      ++*running_;
      Napi::Promise promise = task->promise();
      task->Queue();
      return promise;
    });
  }

  Napi::Value merge_lora(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "mergeLora", [&]() -> Napi::Value {
      check_idle("mergeLora");
      model_->merge_lora();
      return info.Env().Undefined();
    });
  }

  Napi::Value set_base_trainable(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "setBaseTrainable", [&]() -> Napi::Value {
      check_idle("setBaseTrainable");
      model_->set_base_trainable(bool_arg(info, 0, "setBaseTrainable", "trainable", true));
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
    return guard(info.Env(), "addLora", [&]() -> Napi::Value {
      check_idle("addLora");
      if (!info[0].IsArray()) throw Napi::TypeError::New(info.Env(), "addLora: targets must be an array of module names, got " + describe(info[0]));
      std::vector<std::string> targets;
      const auto list = info[0].As<Napi::Array>();
      for (uint32_t i = 0; i < list.Length(); ++i) {
        const Napi::Value v = list.Get(i);
        if (!v.IsString()) throw Napi::TypeError::New(info.Env(), "addLora: targets[" + std::to_string(i) + "] must be a string, got " + describe(v));
        targets.push_back(v.As<Napi::String>().Utf8Value());
      }
      const double r = number_arg(info, 1, "addLora", "r", 8);
      if (r < 1 || r != static_cast<double>(static_cast<int64_t>(r)))
        throw Napi::RangeError::New(info.Env(), "addLora: r must be a positive integer, got " + describe(info[1]));
      model_->add_lora(targets, static_cast<int64_t>(r), number_arg(info, 2, "addLora", "loraAlpha", 16),
                       bool_arg(info, 3, "addLora", "rslora", false), seed_arg(info, 4, "addLora").value_or(0));
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

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }

  // Changes to the model's structure while a generation reads it on a worker thread would race:
  // addLora, mergeLora and setLatentPool refuse while one runs.
  void check_idle(const char* op) const {
    live(op);
    if (*running_ > 0)
      throw Napi::Error::New(Env(), std::string(op) + ": the model is generating; await generate() before changing it");
  }

  std::shared_ptr<LlamaModel> model_;
  std::shared_ptr<int> running_ = std::make_shared<int>(0);
};

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) { exports.Set("Model", Model::define(env)); }

}  // namespace jfa::binding
