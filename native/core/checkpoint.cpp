#include "core/checkpoint.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <string>
#include <utility>

namespace jfa {
namespace {

using torch::autograd::variable_list;

struct RecomputeBackward : torch::autograd::Node {
  at::Tensor x;  // the input, detached
  std::vector<at::Tensor> params;
  std::function<at::Tensor(const at::Tensor&)> fn;

  std::string name() const override { return "jfa::CheckpointedBackward"; }
  void release_variables() override {
    x.reset();
    params.clear();
    fn = nullptr;
  }

  variable_list apply(variable_list&& grads) override {
    if (!fn) throw std::runtime_error("checkpointed: backward through this graph a second time (its inputs were released)");
    at::AutoGradMode on(true);
    const at::Tensor input = x.detach().requires_grad_(true);
    const at::Tensor y = fn(input);
    variable_list inputs{input};
    std::vector<size_t> taking;  // params that get a gradient, by position
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].requires_grad()) {
        inputs.push_back(params[i]);
        taking.push_back(i);
      }
    const variable_list g = torch::autograd::grad({y}, inputs, {grads[0]}, /*retain_graph=*/false, /*create_graph=*/false,
                                                  /*allow_unused=*/true);
    variable_list out(1 + params.size());
    out[0] = g[0];
    for (size_t j = 0; j < taking.size(); ++j) out[1 + taking[j]] = g[1 + j];
    return out;
  }
};

}  // namespace

at::Tensor checkpointed(const at::Tensor& x, const std::vector<at::Tensor>& all_params, std::function<at::Tensor(const at::Tensor&)> fn) {
  // Those that can take a gradient, each once: autograd::grad would give a tensor listed twice its
  // whole gradient twice.
  std::vector<at::Tensor> params;
  for (const auto& p : all_params) {
    if (!p.defined() || !p.requires_grad()) continue;
    bool seen = false;
    for (const auto& q : params) seen = seen || q.is_same(p);
    if (!seen) params.push_back(p);
  }
  const bool needs = at::GradMode::is_enabled() && (x.requires_grad() || !params.empty());
  at::Tensor y;
  {
    at::NoGradGuard no_grad;
    y = fn(x);
  }
  if (!needs) return y;
  auto node = c10::make_intrusive<RecomputeBackward>();
  torch::autograd::edge_list edges{x.requires_grad() ? torch::autograd::impl::gradient_edge(x) : torch::autograd::Edge()};
  for (const auto& p : params) edges.push_back(torch::autograd::impl::gradient_edge(p));
  node->set_next_edges(std::move(edges));
  node->x = x.detach();
  node->params = params;
  node->fn = std::move(fn);
  torch::autograd::set_history(y, node);
  return y;
}

}  // namespace jfa
