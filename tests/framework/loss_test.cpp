// Cross-entropy: forward against a naive loop, gradients, ignore_index, target validation.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/loss.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

// Mean of logsumexp(row) - row[target] over rows whose target is not `ignore`; 0 if none.
double naive_cross_entropy(const std::vector<double>& logits, const std::vector<int64_t>& targets, size_t classes,
                           int64_t ignore) {
  double total = 0.0;
  int count = 0;
  for (size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] == ignore) continue;
    double m = logits[r * classes];
    for (size_t j = 0; j < classes; ++j) m = std::max(m, logits[r * classes + j]);
    double s = 0.0;
    for (size_t j = 0; j < classes; ++j) s += std::exp(logits[r * classes + j] - m);
    total += m + std::log(s) - logits[r * classes + static_cast<size_t>(targets[r])];
    ++count;
  }
  return count ? total / count : 0.0;
}

TEST(CrossEntropy, ForwardMatchesNaiveLoop) {
  Generator g(31);
  const Tensor x = mul(randn({6, 5}, DType::F64, Device::cpu(), &g), 2.0);
  const std::vector<int64_t> t = {0, 4, -100, 2, 3, 1};
  const Tensor loss = cross_entropy(x, from_vector(t, {6}));
  EXPECT_EQ(loss.shape(), Shape{});
  EXPECT_EQ(loss.dtype(), DType::F64);
  EXPECT_NEAR(loss.item(), naive_cross_entropy(x.to_vector<double>(), t, 5, -100), 1e-12);
}

TEST(CrossEntropy, LeadingDimsAndI32TargetsAndCustomIgnoreIndex) {
  Generator g(32);
  const Tensor x = randn({2, 3, 4}, DType::F32, Device::cpu(), &g);
  const std::vector<int64_t> t = {0, 1, 2, 3, 2, 2};
  const Tensor t32 = from_vector(std::vector<int32_t>(t.begin(), t.end()), {2, 3});
  const Tensor loss = cross_entropy(x, t32, 2);
  EXPECT_EQ(loss.dtype(), DType::F32);
  EXPECT_NEAR(loss.item(), naive_cross_entropy(x.to_vector<double>(), t, 4, 2), 1e-6);
}

TEST(CrossEntropy, ManyRowsTakeTheParallelPath) {
  Generator g(33);
  const Tensor x = randn({500, 97}, DType::F32, Device::cpu(), &g);
  const Tensor t = randint(0, 97, {500}, DType::I64, Device::cpu(), &g);
  EXPECT_NEAR(cross_entropy(x, t).item(),
              naive_cross_entropy(x.to_vector<double>(), t.to_vector<int64_t>(), 97, -100), 1e-5);
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  const Tensor x = from_vector<double>({1000.0, 0.0, -1000.0, 500.0}, {2, 2});
  const Tensor loss = cross_entropy(x, from_vector<int64_t>({1, 0}, {2}));
  // Row losses 1000 and 1500 (each plus a log1p term far below double precision).
  EXPECT_NEAR(loss.item(), 1250.0, 1e-9);
}

TEST(CrossEntropy, GradientsContiguous) {
  const Tensor t = from_vector<int64_t>({1, 3, 0}, {3});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return cross_entropy(x[0], t); }, {leaf({3, 4}, 1)}));
  const Tensor t2 = from_vector<int32_t>({2, -1, 0, 1}, {2, 2});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return cross_entropy(x[0], t2, -1); },
                        {leaf({2, 2, 3}, 2)}));
}

TEST(CrossEntropy, GradientsNonContiguous) {
  const Tensor t = from_vector<int64_t>({4, 0, 2}, {3});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return cross_entropy(x[0].transpose(0, 1), t); },
                        {leaf({5, 3}, 3)}));
  const Tensor t3 = from_vector<int64_t>({2, 0, 1}, {3});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return cross_entropy(x[0].slice(1, 1, 7, 2), t3); },
                        {leaf({3, 7}, 4)}));
}

TEST(CrossEntropy, IgnoredRowsGetZeroGradient) {
  Generator g(34);
  const Tensor x = randn({4, 3}, DType::F64, Device::cpu(), &g).requires_grad_(true);
  const std::vector<int64_t> t = {2, -100, 0, -100};
  cross_entropy(x, from_vector(t, {4})).backward();
  const auto gx = x.grad().to_vector<double>();
  const auto xv = x.to_vector<double>();
  for (size_t r = 0; r < 4; ++r) {
    double s = 0.0;
    for (size_t j = 0; j < 3; ++j) s += std::exp(xv[r * 3 + j]);
    for (size_t j = 0; j < 3; ++j) {
      // (softmax - onehot) / count with count = 2 non-ignored rows.
      const double want = t[r] == -100 ? 0.0 : (std::exp(xv[r * 3 + j]) / s - (t[r] == int64_t(j))) / 2.0;
      EXPECT_NEAR(gx[r * 3 + j], want, 1e-12) << r << "," << j;
    }
  }
}

TEST(CrossEntropy, AllIgnoredGivesZeroLossAndZeroGradient) {
  const Tensor x = leaf({3, 4}, 5);
  const Tensor loss = cross_entropy(x, full({3}, -100, DType::I64));
  EXPECT_EQ(loss.item(), 0.0);
  loss.backward();
  ASSERT_TRUE(x.grad().defined());
  for (double v : x.grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(CrossEntropy, Bf16LogitsGiveF32Loss) {
  Generator g(35);
  const Tensor x = randn({8, 50}, DType::F32, Device::cpu(), &g).to(DType::BF16).requires_grad_(true);
  const Tensor t = randint(0, 50, {8}, DType::I64, Device::cpu(), &g);
  const Tensor loss = cross_entropy(x, t);
  EXPECT_EQ(loss.dtype(), DType::F32);
  EXPECT_NEAR(loss.item(), naive_cross_entropy(x.to_vector<double>(), t.to_vector<int64_t>(), 50, -100), 1e-4);
  loss.backward();
  EXPECT_EQ(x.grad().dtype(), DType::BF16);
  EXPECT_EQ(x.grad().shape(), (Shape{8, 50}));
}

TEST(CrossEntropy, Errors) {
  const Tensor x = zeros({3, 5});
  const std::string range_err = testing::error_message([&] { cross_entropy(x, from_vector<int64_t>({0, 7, 1}, {3})); });
  EXPECT_NE(range_err.find("[cross_entropy] target id 7"), std::string::npos) << range_err;
  EXPECT_NE(range_err.find("(3, 5)"), std::string::npos) << range_err;
  const std::string neg_err = testing::error_message([&] { cross_entropy(x, from_vector<int32_t>({0, 1, -3}, {3})); });
  EXPECT_NE(neg_err.find("target id -3"), std::string::npos) << neg_err;
  const std::string shape_err = testing::error_message([&] { cross_entropy(x, from_vector<int64_t>({0, 1}, {2})); });
  EXPECT_NE(shape_err.find("[cross_entropy] logits (3, 5) need targets of shape (3), got (2)"), std::string::npos)
      << shape_err;
  const std::string dtype_err = testing::error_message([&] { cross_entropy(x, zeros({3})); });
  EXPECT_NE(dtype_err.find("[cross_entropy] targets must be i32 or i64, got f32"), std::string::npos) << dtype_err;
  const std::string logit_err = testing::error_message([&] { cross_entropy(zeros({3, 5}, DType::I64), zeros({3}, DType::I64)); });
  EXPECT_NE(logit_err.find("[cross_entropy]"), std::string::npos) << logit_err;
}

}  // namespace
}  // namespace longnet
