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

Napi::Value lora_linear_fn(const Napi::CallbackInfo& info) {
  const char* op = "loraLinear";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    LoraArgs a;
    a.x = tensor_arg(info, 0, op, "x");
    a.W = tensor_arg(info, 1, op, "W");
    a.A = tensor_arg(info, 2, op, "A");
    a.B = tensor_arg(info, 3, op, "B");
    const Options o(info, 4, op);
    a.bias = o.optional_tensor("bias");
    a.scale = o.number("scale", 1.0);
    a.dropout = o.number("dropout", 0.0);
    a.seed = o.seed("seed");
    return tensor_handle::wrap(info.Env(), lora_linear(a));
  });
}

Napi::Value lora_scale_fn(const Napi::CallbackInfo& info) {
  const char* op = "loraScale";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    const double alpha = number_arg(info, 0, op, "loraAlpha", 0.0);
    const int64_t r = int_arg(info, 1, op, "r", 0);
    return Napi::Number::New(info.Env(), lora_scale(alpha, r, bool_arg(info, 2, op, "rslora", false)));
  });
}

Napi::Value lora_init_fn(const Napi::CallbackInfo& info) {
  const char* op = "loraInit";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    at::Tensor A = tensor_arg(info, 0, op, "A");
    at::Tensor B = tensor_arg(info, 1, op, "B");
    const Options o(info, 2, op);
    const auto init = o.choice("init", {"kaiming", "gaussian"}, "kaiming") == "gaussian" ? LoraInit::Gaussian : LoraInit::Kaiming;
    lora_init(A, B, init, o.seed("seed"));
    return info.Env().Undefined();
  });
}

Napi::Value lora_merge_fn(const Napi::CallbackInfo& info) {
  const char* op = "loraMerge";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    at::Tensor W = tensor_arg(info, 0, op, "W");
    const auto& A = tensor_arg(info, 1, op, "A");
    const auto& B = tensor_arg(info, 2, op, "B");
    const Options o(info, 3, op);
    lora_merge(W, A, B, o.number("scale", 1.0), o.boolean("unmerge", false));
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
    const Options o(info, 3, op);
    a.kind = kl_kind_option(o);
    a.reduction = reduction_option(o);
    a.temperature = o.number("temperature", 1.0);
    return tensor_handle::wrap(info.Env(), flashback_divergence(a));
  });
}

Napi::Value token_cross_entropy_fn(const Napi::CallbackInfo& info) {
  const char* op = "tokenCrossEntropy";
  return guard(info.Env(), op, [&]() -> Napi::Value {
    CrossEntropyArgs a;
    a.logits = tensor_arg(info, 0, op, "logits");
    a.targets = tensor_arg(info, 1, op, "targets");
    const Options o(info, 2, op);
    a.mask = o.optional_tensor("mask");
    a.ignore_index = o.integer("ignoreIndex", -100);
    a.reduction = reduction_option(o);
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
    const Options o(info, 1, op);
    std::vector<std::vector<int64_t>> orders;
    if (!o.has("orders")) {
      orders = pcgrad_orders(static_cast<int64_t>(grads.size()), o.seed("seed").value_or(0));
    } else {
      const Napi::Value v = o.get("orders");
      if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(op) + ": options.orders must be an array of integer arrays, got " + describe(v));
      auto rows = v.As<Napi::Array>();
      for (uint32_t i = 0; i < rows.Length(); ++i) {
        const Napi::Value row = rows.Get(i);
        const std::string where = std::string(op) + ": options.orders[" + std::to_string(i) + "]";
        if (!row.IsArray()) throw Napi::TypeError::New(env, where + " must be an array of integers, got " + describe(row));
        std::vector<int64_t> order;
        auto items = row.As<Napi::Array>();
        for (uint32_t k = 0; k < items.Length(); ++k)
          order.push_back(integer_value(env, items.Get(k), where + "[" + std::to_string(k) + "]", 0, static_cast<int64_t>(grads.size()) - 1));
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
    const int64_t n = int_arg(info, 0, op, "n", 0, 1, 4096);
    const auto orders = pcgrad_orders(n, seed_arg(info, 1, op).value_or(0));
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

Reduction reduction_option(const Options& o, const char* fallback) {
  return o.choice("reduction", {"mean", "sum"}, fallback) == "sum" ? Reduction::Sum : Reduction::Mean;
}

KlKind kl_kind_option(const Options& o, const char* name, const char* fallback) {
  const std::string kind = o.choice(name, {"symmetric", "forward", "reverse"}, fallback);
  return kind == "forward" ? KlKind::Forward : kind == "reverse" ? KlKind::Reverse : KlKind::Symmetric;
}

void register_kernels(Napi::Env env, Napi::Object exports, Signatures& signatures) {
  export_functions(env, exports, signatures,
                   {
                       {"loraLinear", 5, lora_linear_fn},
                       {"loraScale", 3, lora_scale_fn},
                       {"loraInit", 3, lora_init_fn},
                       {"loraMerge", 4, lora_merge_fn},
                       {"flashbackDivergence", 4, flashback_divergence_fn},
                       {"tokenCrossEntropy", 3, token_cross_entropy_fn},
                       {"pcgrad", 2, pcgrad_fn},
                       {"pcgradOrders", 2, pcgrad_orders_fn},
                       {"gpmBasis", 3, gpm_basis_fn},
                       {"gpmProject", 2, gpm_project_fn},
                       {"latentMixture", 5, latent_mixture_fn},
                       {"clipGradNorm", 2, clip_grad_norm_fn},
                   });
}

}  // namespace jfa::binding
