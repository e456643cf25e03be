// The Optimizer handle: owns the trainable parameters' AdamW state (native/core Trainer) and runs
// a whole training step on the libuv pool behind one Promise. Every setting is required: the
// defaults are the library's (lib/jfa/plan.ts, lib/optim.ts), never invented here.
#include "binding/train.h"

#include <memory>
#include <utility>

#include "binding/distributed.h"
#include "binding/kernels.h"
#include "binding/model.h"
#include "binding/tensor.h"
#include "binding/worker.h"
#include "core/train_step.h"

namespace jfa::binding {
namespace {

StepBatch batch_option(const Options& o) {
  StepBatch b;
  b.flashback = o.choice("kind", {"new", "flashback"}, nullptr) == "flashback";
  b.ids = o.tensor("ids");
  b.attention_mask = o.optional_tensor("attentionMask");
  b.targets = o.optional_tensor("targets");
  b.reference_logits = o.optional_tensor("referenceLogits");
  b.reference_hidden = o.optional_tensor("referenceHidden");
  b.latent = latent_option(o);
  b.weight = o.required_number("weight");
  return b;
}

StepSettings step_settings(const Options& o) {
  StepSettings s;
  s.divergence = o.required_boolean("divergence");
  s.latent = o.required_boolean("latent");
  s.alpha = o.required_number("alpha");
  s.kl = kl_kind_option(o, "kl", nullptr);
  s.reduction = reduction_option(o, nullptr);
  s.pcgrad = o.required_boolean("pcgrad");
  s.max_grad_norm = o.required_number("maxGradNorm");
  s.seed = o.required_seed("seed");
  s.plain_sft_weight = o.required_number("plainSftWeight");
  s.penalties.ewc_lambda = o.required_number("ewcLambda");
  s.penalties.ewc_fisher = o.tensors("ewcFisher");
  s.penalties.olora_lambda = o.required_number("oloraLambda");
  s.penalties.olora_previous = o.tensors("oloraPrevious");
  s.pace_sigma = o.required_number("paceSigma");
  s.pace_lambda = o.required_number("paceLambda");
  s.lr = o.required_number("lr");
  s.timings = o.required_boolean("timings");
  if (o.has("group")) {
    s.group = group_arg(o.get("group").Env(), o.get("group"), "trainStep: options.group");
    s.flat_bucket = o.choice("bucket", {"flat", "tensor"}, nullptr) == "flat";
  }
  return s;
}

Napi::Object metrics_object(Napi::Env env, const StepMetrics& m, bool timings) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("sft", m.sft);
  out.Set("plainSft", m.plain_sft);
  out.Set("divergence", m.divergence);
  out.Set("penalty", m.penalty);
  out.Set("gradNorm", m.grad_norm);
  out.Set("conflicts", static_cast<double>(m.conflicts));
  if (timings) {
    const StepTimings& t = m.timings;
    Napi::Object o = Napi::Object::New(env);
    o.Set("forward", t.forward);
    o.Set("refForward", t.ref_forward);
    o.Set("loss", t.loss);
    o.Set("backward", t.backward);
    o.Set("gradCollect", t.grad_collect);
    o.Set("allreduce", t.allreduce);
    o.Set("projection", t.projection);
    o.Set("clip", t.clip);
    o.Set("optimizer", t.optimizer);
    o.Set("total", t.total);
    out.Set("timings", o);
  }
  return out;
}

Napi::Array tensor_array(Napi::Env env, const std::vector<at::Tensor>& ts) {
  auto out = Napi::Array::New(env, ts.size());
  for (uint32_t i = 0; i < ts.size(); ++i) out.Set(i, tensor_handle::wrap(env, ts[i]));
  return out;
}

class Optimizer : public CheckedWrap<Optimizer> {
 public:
  static Napi::Function define(Napi::Env env, Signatures& sig) {
    return DefineClass(env, "Optimizer",
                       {
                           InstanceAccessor<&Optimizer::exp_avg>("expAvg"),
                           InstanceAccessor<&Optimizer::exp_avg_sq>("expAvgSq"),
                           InstanceAccessor<&Optimizer::steps>("steps"),
                           InstanceAccessor<&Optimizer::busy>("busy"),
                           method<&Optimizer::step, 1>(sig, "Optimizer", "step", "optimizer.step"),
                           method<&Optimizer::train_step_async, 2>(sig, "Optimizer", "trainStepAsync", "trainStep"),
                           method<&Optimizer::dispose, 0>(sig, "Optimizer", "dispose", "optimizer.dispose"),
                       });
  }

  // new Optimizer(params, {lr, beta1, beta2, eps, weightDecay}), every field given
  explicit Optimizer(const Napi::CallbackInfo& info) : CheckedWrap<Optimizer>(info) {
    const char* op = "Optimizer";
    guard(info.Env(), op, [&]() -> Napi::Value {
      check_arity(info, 2, op);
      auto params = tensor_list(info, info[0], std::string(op) + ": params");
      const Options o(info, 1, op);
      AdamWOptions a;
      a.lr = o.required_number("lr");
      a.beta1 = o.required_number("beta1");
      a.beta2 = o.required_number("beta2");
      a.eps = o.required_number("eps");
      a.weight_decay = o.required_number("weightDecay");
      trainer_ = std::make_shared<Trainer>(std::move(params), a);
      return info.Env().Undefined();
    });
  }

 private:
  Trainer& idle(const char* op) const {
    if (!trainer_) throw Napi::TypeError::New(Env(), std::string(op) + ": the optimizer is disposed");
    if (*busy_) throw Napi::Error::New(Env(), std::string(op) + ": a training step is running on this optimizer; await it first");
    return *trainer_;
  }

  Napi::Value exp_avg(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "optimizer.expAvg", [&]() -> Napi::Value { return tensor_array(info.Env(), idle("optimizer.expAvg").exp_avg()); });
  }
  Napi::Value exp_avg_sq(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "optimizer.expAvgSq",
                 [&]() -> Napi::Value { return tensor_array(info.Env(), idle("optimizer.expAvgSq").exp_avg_sq()); });
  }
  Napi::Value steps(const Napi::CallbackInfo& info) {
    return guard(info.Env(), "optimizer.steps", [&]() -> Napi::Value { return tensor_handle::wrap(info.Env(), idle("optimizer.steps").steps()); });
  }
  Napi::Value busy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), *busy_); }

  // AdamW on the parameters' current gradients (the caller ran its own backward).
  Napi::Value step(const Napi::CallbackInfo& info) {
    const char* op = "optimizer.step";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      Trainer& t = idle(op);
      t.adamw(required_number_arg(info, 0, op, "lr"));
      return info.Env().Undefined();
    });
  }

  // trainStepAsync(model, {divergence, latent, ..., lr, batches: [...]}): the whole step on the libuv pool.
  // The model is leased for training until the promise settles: forwards and changes on it refuse
  // meanwhile, and so do this optimizer's own methods.
  Napi::Value train_step_async(const Napi::CallbackInfo& info) {
    const char* op = "trainStep";
    return guard(info.Env(), op, [&]() -> Napi::Value {
      idle(op);
      ModelRef model = model_arg(info.Env(), info[0], std::string(op) + ": model");
      const Options o(info, 1, op, "step");
      const StepSettings settings = step_settings(o);
      std::vector<StepBatch> batches;
      for (const Options& b : o.objects("batches")) batches.push_back(batch_option(b));
      if (model.use->training) throw Napi::Error::New(info.Env(), std::string(op) + ": the model is already training");
      if (model.use->readers > 0)
        throw Napi::Error::New(info.Env(), std::string(op) + ": the model is generating; await generate() before training it");
      auto metrics = std::make_shared<StepMetrics>();
      model.use->training = true;
      *busy_ = true;
      return queue_async(info.Env(), {op,
                                      [trainer = trainer_, model = model.model, batches = std::move(batches), settings, metrics] {
                                        *metrics = trainer->step(*model, batches, settings);
                                      },
                                      {},
                                      [metrics, timings = settings.timings](Napi::Env env, const std::vector<Napi::Value>&) -> Napi::Value {
                                        return metrics_object(env, *metrics, timings);
                                      },
                                      [use = model.use, busy = busy_] {
                                        use->training = false;
                                        *busy = false;
                                      }});
    });
  }

  // A running step keeps its own reference: the state is freed when it ends.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    trainer_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<Trainer> trainer_;
  std::shared_ptr<bool> busy_ = std::make_shared<bool>(false);
};

}  // namespace

void register_train(Napi::Env env, Napi::Object exports, Signatures& signatures) {
  exports.Set("Optimizer", Optimizer::define(env, signatures));
}

}  // namespace jfa::binding
