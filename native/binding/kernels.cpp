// The compute kernels exported to JS: argument reading and result wrapping around native/core.
#include <napi.h>

#include <utility>

#include "binding/boundary.h"
#include "binding/kernels.h"
#include "binding/tensor.h"
#include "core/divergence.h"
#include "core/latent_mixture.h"
#include "core/lora.h"
#include "core/optim.h"
#include "core/projection.h"

namespace jfa::binding {
namespace {

Reduction reduction_arg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  return choice_arg(info, i, op, "reduction", {"mean", "sum"}, "mean") == "sum" ? Reduction::Sum : Reduction::Mean;
}

Napi::Value lora_linear_fn(const Napi::CallbackInfo& info) {
  const char* op = "loraLinear";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    LoraArgs a;
    a.x = tensor_arg(info, 0, op, "x");
    a.W = tensor_arg(info, 1, op, "W");
    a.A = tensor_arg(info, 2, op, "A");
    a.B = tensor_arg(info, 3, op, "B");
    a.bias = optional_tensor_arg(info, 4, op, "bias");
    a.scale = number_arg(info, 5, op, "scale", 1.0);
    a.dropout = number_arg(info, 6, op, "dropout", 0.0);
    a.seed = seed_arg(info, 7, op);
    return tensor_handle::wrap(info.Env(), lora_linear(a));
  });
}

Napi::Value lora_scale_fn(const Napi::CallbackInfo& info) {
  const char* op = "loraScale";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    const double alpha = number_arg(info, 0, op, "loraAlpha", 0.0);
    const double r = number_arg(info, 1, op, "r", 0.0);
    if (r != static_cast<double>(static_cast<int64_t>(r))) throw_range(std::string(op) + ": r must be an integer, got " + describe(info[1]));
    return Napi::Number::New(info.Env(), lora_scale(alpha, static_cast<int64_t>(r), bool_arg(info, 2, op, "rslora", false)));
  });
}

Napi::Value lora_init_fn(const Napi::CallbackInfo& info) {
  const char* op = "loraInit";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    at::Tensor A = tensor_arg(info, 0, op, "A");
    at::Tensor B = tensor_arg(info, 1, op, "B");
    const auto init = choice_arg(info, 2, op, "init", {"kaiming", "gaussian"}, "kaiming") == "gaussian" ? LoraInit::Gaussian
                                                                                                           : LoraInit::Kaiming;
    lora_init(A, B, init, seed_arg(info, 3, op));
    return info.Env().Undefined();
  });
}

Napi::Value lora_merge_fn(const Napi::CallbackInfo& info) {
  const char* op = "loraMerge";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    at::Tensor W = tensor_arg(info, 0, op, "W");
    const auto& A = tensor_arg(info, 1, op, "A");
    const auto& B = tensor_arg(info, 2, op, "B");
    lora_merge(W, A, B, number_arg(info, 3, op, "scale", 1.0), bool_arg(info, 4, op, "unmerge", false));
    return info.Env().Undefined();
  });
}

Napi::Value flashback_divergence_fn(const Napi::CallbackInfo& info) {
  const char* op = "flashbackDivergence";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    DivergenceArgs a;
    a.cur = tensor_arg(info, 0, op, "cur");
    a.ref = tensor_arg(info, 1, op, "ref");
    a.mask = tensor_arg(info, 2, op, "mask");
    const std::string kind = choice_arg(info, 3, op, "kind", {"symmetric", "forward", "reverse"}, "symmetric");
    a.kind = kind == "forward" ? KlKind::Forward : kind == "reverse" ? KlKind::Reverse : KlKind::Symmetric;
    a.reduction = reduction_arg(info, 4, op);
    a.temperature = number_arg(info, 5, op, "temperature", 1.0);
    return tensor_handle::wrap(info.Env(), flashback_divergence(a));
  });
}

Napi::Value token_cross_entropy_fn(const Napi::CallbackInfo& info) {
  const char* op = "tokenCrossEntropy";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    CrossEntropyArgs a;
    a.logits = tensor_arg(info, 0, op, "logits");
    a.targets = tensor_arg(info, 1, op, "targets");
    a.mask = optional_tensor_arg(info, 2, op, "mask");
    a.ignore_index = static_cast<int64_t>(number_arg(info, 3, op, "ignoreIndex", -100));
    a.reduction = reduction_arg(info, 4, op);
    return tensor_handle::wrap(info.Env(), token_cross_entropy(a));
  });
}

Napi::Value pcgrad_fn(const Napi::CallbackInfo& info) {
  const char* op = "pcgrad";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    if (!info[0].IsArray()) throw Napi::TypeError::New(env, std::string(op) + ": grads must be an array of Tensor arrays, got " + describe(info[0]));
    auto list = info[0].As<Napi::Array>();
    GradientSet grads;
    for (uint32_t i = 0; i < list.Length(); ++i)
      grads.push_back(tensor_list(info, list.Get(i), std::string(op) + ": grads[" + std::to_string(i) + "]"));
    std::vector<std::vector<int64_t>> orders;
    if (info[1].IsUndefined()) {
      orders = pcgrad_orders(static_cast<int64_t>(grads.size()), seed_arg(info, 2, op).value_or(0));
    } else {
      if (!info[1].IsArray()) throw Napi::TypeError::New(env, std::string(op) + ": orders must be an array of integer arrays, got " + describe(info[1]));
      auto rows = info[1].As<Napi::Array>();
      for (uint32_t i = 0; i < rows.Length(); ++i) {
        const Napi::Value row = rows.Get(i);
        if (!row.IsArray()) throw Napi::TypeError::New(env, std::string(op) + ": orders[" + std::to_string(i) + "] must be an array of integers, got " + describe(row));
        std::vector<int64_t> order;
        auto items = row.As<Napi::Array>();
        for (uint32_t k = 0; k < items.Length(); ++k) {
          const Napi::Value item = items.Get(k);
          if (!item.IsNumber()) throw Napi::TypeError::New(env, std::string(op) + ": orders[" + std::to_string(i) + "][" + std::to_string(k) + "] must be an integer, got " + describe(item));
          order.push_back(item.As<Napi::Number>().Int64Value());
        }
        orders.push_back(std::move(order));
      }
    }
    const PcgradResult r = pcgrad(grads, orders);
    auto out = Napi::Array::New(env, r.grads.size());
    for (uint32_t p = 0; p < r.grads.size(); ++p) out.Set(p, tensor_handle::wrap(env, r.grads[p]));
    auto gram = Napi::Float64Array::New(env, r.gram.size());
    std::copy(r.gram.begin(), r.gram.end(), gram.Data());
    Napi::Object result = Napi::Object::New(env);
    result.Set("grads", out);
    result.Set("conflicts", static_cast<double>(r.conflicts));
    result.Set("gram", gram);
    return result;
  });
}

Napi::Value pcgrad_orders_fn(const Napi::CallbackInfo& info) {
  const char* op = "pcgradOrders";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    const double n = number_arg(info, 0, op, "n", 0);
    if (n < 1 || n != static_cast<double>(static_cast<int64_t>(n)) || n > 4096)
      throw Napi::RangeError::New(info.Env(), std::string(op) + ": n must be an integer from 1 to 4096, got " + describe(info[0]));
    const auto orders = pcgrad_orders(static_cast<int64_t>(n), seed_arg(info, 1, op).value_or(0));
    auto out = Napi::Array::New(info.Env(), orders.size());
    for (uint32_t i = 0; i < orders.size(); ++i) {
      auto row = Napi::Array::New(info.Env(), orders[i].size());
      for (uint32_t k = 0; k < orders[i].size(); ++k) row.Set(k, static_cast<double>(orders[i][k]));
      out.Set(i, row);
    }
    return out;
  });
}

Napi::Value gpm_basis_fn(const Napi::CallbackInfo& info) {
  const char* op = "gpmBasis";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    const auto& activations = tensor_arg(info, 0, op, "activations");
    const double threshold = number_arg(info, 1, op, "threshold", 0.97);
    return tensor_handle::wrap(info.Env(), gpm_basis(activations, threshold, optional_tensor_arg(info, 2, op, "basis")));
  });
}

Napi::Value gpm_project_fn(const Napi::CallbackInfo& info) {
  const char* op = "gpmProject";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    return tensor_handle::wrap(info.Env(), gpm_project(tensor_arg(info, 0, op, "grad"), tensor_arg(info, 1, op, "basis")));
  });
}

Napi::Value adamw_step_fn(const Napi::CallbackInfo& info) {
  const char* op = "adamwStep";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    const auto params = tensor_list(info, info[0], std::string(op) + ": params");
    const auto m = tensor_list(info, info[1], std::string(op) + ": expAvg");
    const auto v = tensor_list(info, info[2], std::string(op) + ": expAvgSq");
    const at::Tensor& steps = tensor_arg(info, 3, op, "steps");
    AdamWOptions o;
    o.lr = number_arg(info, 4, op, "lr", o.lr);
    o.beta1 = number_arg(info, 5, op, "beta1", o.beta1);
    o.beta2 = number_arg(info, 6, op, "beta2", o.beta2);
    o.eps = number_arg(info, 7, op, "eps", o.eps);
    o.weight_decay = number_arg(info, 8, op, "weightDecay", o.weight_decay);
    adamw_step(params, m, v, steps, o);
    return info.Env().Undefined();
  });
}

Napi::Value clip_grad_norm_fn(const Napi::CallbackInfo& info) {
  const char* op = "clipGradNorm";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    const auto params = tensor_list(info, info[0], std::string(op) + ": params");
    return Napi::Number::New(info.Env(), clip_grad_norm(params, number_arg(info, 1, op, "maxNorm", 1.0)));
  });
}

Napi::Value latent_mixture_fn(const Napi::CallbackInfo& info) {
  const char* op = "latentMixture";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    LatentMixtureArgs a;
    a.x = tensor_arg(info, 0, op, "x");
    a.A = tensor_arg(info, 1, op, "A");
    a.B = tensor_arg(info, 2, op, "B");
    a.indices = tensor_arg(info, 3, op, "indices");
    a.weights = tensor_arg(info, 4, op, "weights");
    return tensor_handle::wrap(info.Env(), latent_mixture(a));
  });
}

}  // namespace

void register_kernels(Napi::Env env, Napi::Object exports) {
  const std::pair<const char*, Napi::Function::Callback> fns[] = {
      {"loraLinear", lora_linear_fn},
      {"loraScale", lora_scale_fn},
      {"loraInit", lora_init_fn},
      {"loraMerge", lora_merge_fn},
      {"flashbackDivergence", flashback_divergence_fn},
      {"tokenCrossEntropy", token_cross_entropy_fn},
      {"pcgrad", pcgrad_fn},
      {"pcgradOrders", pcgrad_orders_fn},
      {"gpmBasis", gpm_basis_fn},
      {"gpmProject", gpm_project_fn},
      {"latentMixture", latent_mixture_fn},
      {"adamwStep", adamw_step_fn},
      {"clipGradNorm", clip_grad_norm_fn},
  };
  for (const auto& [name, fn] : fns) exports.Set(name, Napi::Function::New(env, fn, name));
}

}  // namespace jfa::binding
