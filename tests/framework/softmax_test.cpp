// Softmax and log-softmax: forward against naive loops, gradients, masked rows, errors.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "framework/ops/softmax.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Naive (log-)softmax of row-major `x` of `shape` along `dim`.
std::vector<double> naive_softmax(const std::vector<double>& x, const Shape& shape, size_t dim, bool log) {
  int64_t outer = 1, inner = 1;
  for (size_t d = 0; d < dim; ++d) outer *= shape[d];
  for (size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
  const int64_t len = shape[dim];
  std::vector<double> y(x.size());
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t j) { return static_cast<size_t>((o * len + j) * inner + i); };
      double m = -kInf;
      for (int64_t j = 0; j < len; ++j) m = std::max(m, x[at(j)]);
      double s = 0.0;
      for (int64_t j = 0; j < len; ++j) s += std::exp(x[at(j)] - m);
      for (int64_t j = 0; j < len; ++j) {
        y[at(j)] = log ? x[at(j)] - m - std::log(s) : std::exp(x[at(j)] - m) / s;
      }
    }
  }
  return y;
}

Tensor naive_tensor(const Tensor& x, int64_t dim, bool log) {
  return from_vector(naive_softmax(x.to_vector<double>(), x.shape(), static_cast<size_t>(dim), log), x.shape());
}

TEST(Softmax, ForwardMatchesNaiveLoopOnEveryDim) {
  Generator g(11);
  const Tensor x = mul(randn({3, 4, 5}, DType::F64, Device::cpu(), &g), 3.0);
  for (int64_t dim = 0; dim < 3; ++dim) {
    EXPECT_TRUE(all_close(softmax(x, dim), naive_tensor(x, dim, false), 1e-12, 1e-12)) << "dim " << dim;
    EXPECT_TRUE(all_close(log_softmax(x, dim), naive_tensor(x, dim, true), 1e-12, 1e-12)) << "dim " << dim;
  }
  EXPECT_TRUE(all_close(softmax(x, -2), naive_tensor(x, 1, false), 1e-12, 1e-12));
}

TEST(Softmax, ManyRowsTakeTheParallelPathInF32) {
  Generator g(12);
  const Tensor x = randn({300, 130}, DType::F32, Device::cpu(), &g);
  const Tensor y = softmax(x, -1);
  EXPECT_EQ(y.dtype(), DType::F32);
  EXPECT_TRUE(all_close(y, naive_tensor(x, 1, false), 1e-6, 1e-5));
  EXPECT_TRUE(all_close(log_softmax(x.transpose(0, 1), 0), naive_tensor(x, 1, true).transpose(0, 1), 1e-5, 1e-5));
}

TEST(Softmax, GradientsContiguous) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return softmax(x[0], -1); }, {leaf({3, 4}, 1)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return log_softmax(x[0], -1); }, {leaf({3, 4}, 2)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return softmax(x[0], 1); }, {leaf({2, 3, 2}, 3)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return log_softmax(x[0], 0); }, {leaf({3, 2, 2}, 4)}));
}

TEST(Softmax, GradientsNonContiguous) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return softmax(x[0].transpose(0, 1), -1); },
                        {leaf({4, 3}, 5)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return log_softmax(x[0].slice(1, 0, 6, 2), -1); },
                        {leaf({3, 6}, 6)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return log_softmax(x[0].permute({2, 0, 1}), 1); },
                        {leaf({2, 3, 2}, 7)}));
}

TEST(Softmax, FullyMaskedRowsGiveZeroAndMinusInfinityNotNaN) {
  const Tensor x = from_vector<double>({-kInf, -kInf, -kInf, 1.0, -kInf, 2.0}, {2, 3}).requires_grad_(true);
  const auto p = softmax(x, -1).to_vector<double>();
  EXPECT_EQ(p[0], 0.0);
  EXPECT_EQ(p[2], 0.0);
  EXPECT_NEAR(p[3], 1.0 / (1.0 + std::exp(1.0)), 1e-12);
  EXPECT_EQ(p[4], 0.0);
  const Tensor ls = log_softmax(x, -1);
  const auto l = ls.to_vector<double>();
  for (int j = 0; j < 3; ++j) EXPECT_EQ(l[static_cast<size_t>(j)], -kInf);
  EXPECT_NEAR(l[5], -std::log1p(std::exp(-1.0)), 1e-12);
  // Masked entries of a partly masked row get exactly 1 * g from log-softmax and 0 from softmax.
  sum(mul(softmax(x, -1), from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}))).backward();
  for (double v : x.grad().to_vector<double>()) EXPECT_FALSE(std::isnan(v));
  EXPECT_EQ(x.grad().to_vector<double>()[4], 0.0);
}

TEST(Softmax, NaNRowsStayNaN) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor x = from_vector<double>({nan, nan, -kInf, nan, 0.0, 1.0}, {2, 3});
  for (const Tensor& y : {softmax(x, -1), log_softmax(x, -1)}) {
    for (double v : y.to_vector<double>()) EXPECT_TRUE(std::isnan(v));
  }
}

TEST(Softmax, ScalarIsOne) {
  EXPECT_EQ(softmax(scalar_tensor(3.5, DType::F64)).item(), 1.0);
  EXPECT_EQ(log_softmax(scalar_tensor(3.5, DType::F64)).item(), 0.0);
  EXPECT_EQ(softmax(scalar_tensor(3.5, DType::F64)).shape(), Shape{});
}

TEST(Softmax, Bf16ForwardWithinRounding) {
  Generator g(13);
  const Tensor x16 = randn({6, 33}, DType::F32, Device::cpu(), &g).to(DType::BF16);
  const Tensor ref_in = x16.to(DType::F64);
  const Tensor y = softmax(x16, -1);
  EXPECT_EQ(y.dtype(), DType::BF16);
  EXPECT_TRUE(all_close(y, naive_tensor(ref_in, 1, false), 1e-3, 1e-2));
  const Tensor l = log_softmax(x16, 0);
  EXPECT_EQ(l.dtype(), DType::BF16);
  EXPECT_TRUE(all_close(l, naive_tensor(ref_in, 0, true), 1e-2, 1e-2));
}

TEST(Softmax, Errors) {
  const std::string dim_err = testing::error_message([] { softmax(zeros({2, 3}), 2); });
  EXPECT_NE(dim_err.find("[softmax]"), std::string::npos) << dim_err;
  EXPECT_NE(dim_err.find("dim 2"), std::string::npos) << dim_err;
  const std::string dtype_err = testing::error_message([] { log_softmax(zeros({2, 3}, DType::I64), -1); });
  EXPECT_NE(dtype_err.find("[log_softmax]"), std::string::npos) << dtype_err;
  EXPECT_NE(dtype_err.find("(2, 3)"), std::string::npos) << dtype_err;
}

}  // namespace
}  // namespace longnet
