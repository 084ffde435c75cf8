// Gradient clipping by global norm: the norm against a hand-computed sum, scaling only above the
// threshold, parameters without gradients, 16-bit gradients, and non-finite gradients.
#include "optim/clip.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/support/gpu.h"

namespace longnet::optim {
namespace {

Tensor param_with_grad(const std::vector<double>& grad, const Shape& shape, DType grad_dtype = DType::F32,
                       Device device = Device::cpu()) {
  Tensor p = zeros(shape, DType::F32, device);
  p.requires_grad_();
  p.set_grad(from_vector<double>(grad, shape, Device::cpu()).to(grad_dtype).to(device));
  return p;
}

TEST(ClipGradNorm, NormOverAllParameters) {
  // 3-4-12-84 Pythagorean chain: the norm of (3, 4, 12, 84) is 85.
  const std::vector<Tensor> params{param_with_grad({3, 4}, {2}), param_with_grad({12, 84}, {2, 1}), zeros({3})};
  EXPECT_DOUBLE_EQ(grad_norm(params), 85.0);
  // Below the threshold nothing changes.
  EXPECT_DOUBLE_EQ(clip_grad_norm_(params, 100.0), 85.0);
  EXPECT_EQ(params[0].grad().to_vector<double>(), (std::vector<double>{3, 4}));
  // Above it every gradient is scaled by max / (norm + 1e-6).
  EXPECT_DOUBLE_EQ(clip_grad_norm_(params, 17.0), 85.0);
  const double coef = 17.0 / (85.0 + 1e-6);
  const std::vector<double> g0 = params[0].grad().to_vector<double>();
  const std::vector<double> g1 = params[1].grad().to_vector<double>();
  EXPECT_NEAR(g0[0], 3 * coef, 1e-6);
  EXPECT_NEAR(g1[1], 84 * coef, 1e-5);
  EXPECT_NEAR(grad_norm(params), 17.0, 1e-5);
  // max_norm <= 0 only measures.
  EXPECT_NEAR(clip_grad_norm_(params, 0.0), 17.0, 1e-5);
}

TEST(ClipGradNorm, ManyElementsAndBf16Gradients) {
  std::vector<double> a(10000), b(777);
  double sq = 0.0;
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.01 * i), sq += a[i] * a[i];
  // bf16 values: multiples of 1/16 in [-2, 2] are exact in bf16.
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<double>(static_cast<int>(i % 64) - 32) / 16.0, sq += b[i] * b[i];
  const std::vector<Tensor> params{param_with_grad(a, {100, 100}), param_with_grad(b, {777}, DType::BF16)};
  EXPECT_NEAR(grad_norm(params), std::sqrt(sq), 1e-4 * std::sqrt(sq));
  clip_grad_norm_(params, 1.0);
  EXPECT_EQ(params[1].grad().dtype(), DType::BF16);
  EXPECT_NEAR(grad_norm(params), 1.0, 1e-2);  // bf16 rounding of the scaled gradient
}

TEST(ClipGradNorm, NonFiniteGradientsAreReportedAndLeftAlone) {
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {inf, std::numeric_limits<double>::quiet_NaN()}) {
    const std::vector<Tensor> params{param_with_grad({1, 2}, {2}), param_with_grad({bad, 3}, {2})};
    const double norm = clip_grad_norm_(params, 1.0);
    EXPECT_FALSE(std::isfinite(norm));
    EXPECT_EQ(std::isnan(norm), std::isnan(bad));
    EXPECT_EQ(params[0].grad().to_vector<double>(), (std::vector<double>{1, 2}));  // not scaled
  }
  // No gradients at all: norm 0.
  EXPECT_EQ(grad_norm({zeros({2})}), 0.0);
}

TEST(ClipGradNormGpu, MatchesTheCpu) {
  LN_REQUIRE_GPU();
  std::vector<double> a(5000);
  for (size_t i = 0; i < a.size(); ++i) a[i] = std::cos(0.37 * i);
  const std::vector<Tensor> cpu{param_with_grad(a, {50, 100}), param_with_grad({1, 2, 3}, {3}, DType::BF16)};
  const std::vector<Tensor> gpu{param_with_grad(a, {50, 100}, DType::F32, Device::cuda()),
                                param_with_grad({1, 2, 3}, {3}, DType::BF16, Device::cuda())};
  EXPECT_NEAR(clip_grad_norm_(gpu, 2.0), clip_grad_norm_(cpu, 2.0), 1e-4);
  const std::vector<double> gc = cpu[0].grad().to_vector<double>(), gg = gpu[0].grad().to_vector<double>();
  for (size_t i = 0; i < gc.size(); i += 97) EXPECT_NEAR(gg[i], gc[i], 1e-6) << i;
}

}  // namespace
}  // namespace longnet::optim
