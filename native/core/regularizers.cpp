#include "core/regularizers.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>

#include <string>

#include "core/checks.h"

namespace jfa {
namespace {

// The index of `t` among params (by identity), or -1.
int64_t index_of(const std::vector<at::Tensor>& params, const at::Tensor& t) {
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].is_same(t)) return static_cast<int64_t>(i);
  return -1;
}

void add_to(std::vector<at::Tensor>& grads, int64_t i, const at::Tensor& g) {
  if (i >= 0) grads[static_cast<size_t>(i)].add_(g.to(grads[static_cast<size_t>(i)].scalar_type()));
}

}  // namespace

void check_penalties(const LlamaModel& model, const AdapterPenalties& p, const char* op) {
  const std::string where(op);
  if (!(p.ewc_lambda >= 0) || !std::isfinite(p.ewc_lambda)) throw_range(where + ": ewcLambda must be a finite number >= 0, got " + std::to_string(p.ewc_lambda));
  if (!(p.olora_lambda >= 0) || !std::isfinite(p.olora_lambda))
    throw_range(where + ": oloraLambda must be a finite number >= 0, got " + std::to_string(p.olora_lambda));
  const auto layers = model.adapted_layers();
  const auto check_list = [&](const std::vector<at::Tensor>& list, const char* name, bool fisher) {
    if (list.size() != layers.size())
      throw_range(where + ": " + name + " has " + std::to_string(list.size()) + " tensors but the model has " + std::to_string(layers.size()) +
                  " adapted layers (one each, in loraParameters' order)");
    for (size_t i = 0; i < layers.size(); ++i) {
      const at::Tensor& t = list[i];
      const LinearLayer& l = *layers[i].second;
      const std::string what = where + ": " + name + "[" + std::to_string(i) + "] (" + layers[i].first + ")";
      if (!t.defined() || !at::isFloatingType(t.scalar_type())) throw_type(what + " must be a floating-point tensor");
      if (t.device() != l.weight.device()) throw_type(what + " is on " + t.device().str() + " but the model is on " + l.weight.device().str());
      const bool fits = fisher ? t.sizes() == l.weight.sizes() : (t.dim() == 2 && t.size(1) == l.lora_A.size(1));
      if (!fits)
        throw_range(what + " is " + shape_str(t.sizes()) + " but must be " +
                    (fisher ? shape_str(l.weight.sizes()) : "(R, " + std::to_string(l.lora_A.size(1)) + ")"));
    }
  };
  if (p.ewc_lambda > 0) check_list(p.ewc_fisher, "ewcFisher", true);
  if (p.olora_lambda > 0) check_list(p.olora_previous, "oloraPrevious", false);
}

double add_penalty_grads(const LlamaModel& model, const AdapterPenalties& p, const std::vector<at::Tensor>& params,
                         std::vector<at::Tensor>& grads) {
  at::NoGradGuard no_grad;
  const auto layers = model.adapted_layers();
  at::Tensor total = at::zeros({}, at::TensorOptions().dtype(at::kDouble));
  for (size_t i = 0; i < layers.size(); ++i) {
    const LinearLayer& l = *layers[i].second;
    const at::Tensor A = l.lora_A.detach().to(at::kFloat), B = l.lora_B.detach().to(at::kFloat);
    const int64_t ia = index_of(params, l.lora_A), ib = index_of(params, l.lora_B);
    if (p.ewc_lambda > 0) {
      // dP/d(dW) = 2 lambda F dW with dW = s B A, so dP/dA = s B^T G and dP/dB = s G A^T. One
      // layer's dW at a time (out x in floats), freed before the next layer's.
      const double s = l.lora_scale;
      const at::Tensor dW = at::mm(B, A).mul_(s);
      const at::Tensor FdW = p.ewc_fisher[i].to(at::kFloat) * dW;
      total += (FdW * dW).sum().to(at::kDouble) * p.ewc_lambda;
      const at::Tensor G = FdW.mul_(2.0 * p.ewc_lambda);
      add_to(grads, ia, at::mm(B.t(), G).mul_(s));
      add_to(grads, ib, at::mm(G, A.t()).mul_(s));
    }
    if (p.olora_lambda > 0 && p.olora_previous[i].size(0) > 0) {
      // ||A O^T||^2 with O the earlier rounds' A stacked: dP/dA = 2 lambda (A O^T) O.
      const at::Tensor O = p.olora_previous[i].to(at::kFloat);
      const at::Tensor P = at::mm(A, O.t());
      total += P.square().sum().to(at::kDouble) * p.olora_lambda;
      add_to(grads, ia, at::mm(P, O).mul_(2.0 * p.olora_lambda));
    }
  }
  return total.item<double>();
}

std::vector<at::Tensor> fisher_diagonal(const LlamaModel& model, const at::Tensor& ids_in, const at::Tensor& mask_in, const at::Tensor& targets_in) {
  const char* op = "fisherDiagonal";
  const auto layers = model.adapted_layers();
  if (layers.empty()) throw_range(std::string(op) + ": the model has no adapters (the Fisher is of the adapted layers' base weights)");
  const at::Tensor ids = model.placed(ids_in), mask = model.placed(mask_in), targets = model.placed(targets_in);
  if (ids.dim() != 2 || ids.scalar_type() != at::kLong) throw_type(std::string(op) + ": ids must be (n, t) int64");
  if (!targets.defined() || targets.scalar_type() != at::kLong || targets.sizes() != ids.sizes())
    throw_type(std::string(op) + ": targets must be int64 of the ids' shape " + shape_str(ids.sizes()));
  const int64_t n = ids.size(0);
  if (n == 0) throw_range(std::string(op) + ": no samples (ids has 0 rows)");
  std::vector<at::Tensor> weights, fisher;
  for (const auto& [name, l] : layers) {
    weights.push_back(l->weight);
    fisher.push_back(at::zeros(l->weight.sizes(), l->weight.options().dtype(at::kFloat)));
  }
  // The base weights record gradients for this call only (the binding leases the model as training).
  struct Frozen {
    std::vector<at::Tensor>& w;
    ~Frozen() {
      for (auto& t : w) t.set_requires_grad(false);
    }
  } frozen{weights};
  for (auto& t : weights) t.set_requires_grad(true);
  at::AutoGradMode grad_mode(true);
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor flat = targets.narrow(0, i, 1).reshape({-1});
    const at::Tensor rows = flat.ne(-100).nonzero().reshape({-1});
    if (rows.numel() == 0) continue;  // nothing scored: a zero gradient
    const at::Tensor hidden = model.hidden_states(ids.narrow(0, i, 1), mask.defined() ? mask.narrow(0, i, 1) : mask, false);
    const at::Tensor logp = at::log_softmax(model.head(hidden, rows).to(at::kFloat), -1);
    const at::Tensor loglik = logp.gather(1, flat.index_select(0, rows).unsqueeze(1)).sum();
    const auto grads = torch::autograd::grad({loglik}, weights);
    for (size_t j = 0; j < grads.size(); ++j) fisher[j].add_(grads[j].to(at::kFloat).square());
  }
  for (auto& f : fisher) f.div_(static_cast<double>(n));
  return fisher;
}

}  // namespace jfa
