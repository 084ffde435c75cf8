// End to end: a two-layer tanh MLP, written with framework ops only and trained with plain SGD,
// learns y = sin(x1) + x2^2. Exercises matmul, broadcasting, reductions, the engine and in-place
// updates together.
#include <chrono>
#include <cmath>
#include <iostream>

#include <gtest/gtest.h>

#include "framework/ops/matmul.h"
#include "framework/ops/ops.h"

namespace longnet {
namespace {

struct Mlp {
  Tensor w1, b1, w2, b2;  // (2, H), (H), (H, 1), (1)

  Mlp(int64_t hidden, Generator& g) {
    w1 = mul(randn({2, hidden}, DType::F32, Device::cpu(), &g), 1.0 / std::sqrt(2.0)).requires_grad_();
    b1 = zeros({hidden}).requires_grad_();
    w2 = mul(randn({hidden, 1}, DType::F32, Device::cpu(), &g), 1.0 / std::sqrt(static_cast<double>(hidden)))
             .requires_grad_();
    b2 = zeros({1}).requires_grad_();
  }
  std::vector<Tensor> params() const { return {w1, b1, w2, b2}; }
  // x (N, 2) -> (N, 1)
  Tensor forward(const Tensor& x) const { return add(matmul(tanh(add(matmul(x, w1), b1)), w2), b2); }
};

Tensor mse(const Tensor& pred, const Tensor& target) {
  const Tensor d = sub(pred, target);
  return mean(mul(d, d));
}

TEST(Mlp, SgdFitsAToyRegression) {
  const auto start = std::chrono::steady_clock::now();
  Generator g(2024);
  const int64_t n = 256;
  const Tensor x = add(mul(rand({n, 2}, DType::F32, Device::cpu(), &g), 3.0), -1.5);  // U(-1.5, 1.5)
  // The target is computed on the host: the framework has no sin, and the reference stays independent.
  const auto xv = x.to_vector<float>();
  std::vector<float> yv;
  for (int64_t i = 0; i < n; ++i) yv.push_back(std::sin(xv[2 * i]) + xv[2 * i + 1] * xv[2 * i + 1]);
  const Tensor y = tensor(yv, {n, 1});
  // The best constant predictor (the mean) reaches the target's variance and no lower.
  const double variance = mean(mul(sub(y, mean(y)), sub(y, mean(y)))).item();

  Mlp model(32, g);
  double initial = 0, loss_value = 0;
  const double lr = 0.1;
  for (int step = 0; step < 1000; ++step) {
    Tensor loss = mse(model.forward(x), y);
    loss_value = loss.item();
    if (step == 0) initial = loss_value;
    loss.backward();
    NoGradGuard no_grad;
    for (const Tensor& p : model.params()) {
      add_(p, p.grad(), -lr);
      zero_(p.grad());
    }
  }
  {
    NoGradGuard no_grad;
    loss_value = mse(model.forward(x), y).item();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RecordProperty("initial_loss", std::to_string(initial));
  RecordProperty("final_loss", std::to_string(loss_value));
  EXPECT_GT(variance, 0.5);
  EXPECT_GT(initial, variance);   // an untrained model does no better than a constant
  EXPECT_LT(loss_value, 0.02);    // far below what any constant (or the untrained model) reaches
  EXPECT_LT(loss_value, 0.05 * variance);
  std::cout << "[mlp] variance " << variance << ", loss " << initial << " -> " << loss_value << " in " << seconds
            << " s\n";
}

}  // namespace
}  // namespace longnet
