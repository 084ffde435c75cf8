#pragma once
// A minimal AdamW loop for model tests (the real optimizer lives in optim/): one fused
// adamw_update_ per parameter per step.
#include <functional>
#include <vector>

#include "framework/ops/ops.h"
#include "layers/module.h"

namespace longnet::testing {

/// Runs `steps` AdamW steps on every parameter of `model`, each minimising loss_fn(); returns the
/// loss before each step.
inline std::vector<double> train_adamw(const Module& model, const std::function<Tensor()>& loss_fn, int steps,
                                       double lr) {
  const std::vector<Tensor> params = model.parameters();
  std::vector<Tensor> m, v;
  for (const Tensor& p : params) {
    m.push_back(zeros_like(p));
    v.push_back(zeros_like(p));
  }
  std::vector<double> losses;
  for (int step = 1; step <= steps; ++step) {
    for (const Tensor& p : params) p.set_grad(Tensor());
    const Tensor loss = loss_fn();
    loss.backward();
    losses.push_back(loss.item());
    NoGradGuard no_grad;
    AdamWParams hp;
    hp.lr = lr;
    hp.step = step;
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].grad().defined()) adamw_update_(params[i], params[i].grad(), m[i], v[i], hp);
    }
  }
  return losses;
}

}  // namespace longnet::testing
