// Reductions: sum, mean, max, argmax and logsumexp against plain loops, their gradients, and the
// edge cases (ties, huge values, rows of -inf, size-1 and scalar inputs).
#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/framework/reference.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::gradcheck;
using testing::leaf;
using testing::naive_reduce;
using testing::near_all;

using Fn = std::vector<Tensor>;
using Dims = std::vector<int64_t>;

double ref_sum(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s;
}
double ref_mean(const std::vector<double>& v) { return ref_sum(v) / static_cast<double>(v.size()); }
double ref_max(const std::vector<double>& v) {
  double m = v[0];
  for (double x : v) m = std::max(m, x);
  return m;
}
double ref_argmax(const std::vector<double>& v) {
  size_t at = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[at]) at = i;
  }
  return static_cast<double>(at);
}
double ref_logsumexp(const std::vector<double>& v) {
  const double m = ref_max(v);
  if (std::isinf(m)) return m;
  double s = 0;
  for (double x : v) s += std::exp(x - m);
  return m + std::log(s);
}

// Shape with the reduced dims set to 1 (keepdim) or removed.
Shape reduced_shape(const Shape& s, Dims dims, bool keepdim) {
  if (dims.empty()) {
    for (size_t d = 0; d < s.size(); ++d) dims.push_back(static_cast<int64_t>(d));
  }
  Shape out;
  for (size_t d = 0; d < s.size(); ++d) {
    bool r = false;
    for (int64_t k : dims) r = r || (k < 0 ? k + static_cast<int64_t>(s.size()) : k) == static_cast<int64_t>(d);
    if (!r) out.push_back(s[d]);
    if (r && keepdim) out.push_back(1);
  }
  return out;
}

const Shape kShape = {2, 3, 4};
const std::vector<Dims> kDimSets = {{0}, {1}, {2}, {-1}, {-3}, {0, 2}, {2, 0}, {-1, 1}, {0, 1, 2}, {}};

TEST(ReduceSumMean, MatchNaiveLoopsForEveryDimSet) {
  Tensor x = leaf(kShape, 1).detach();
  const auto xv = x.to_vector<double>();
  for (const Dims& dims : kDimSets) {
    for (bool keepdim : {false, true}) {
      SCOPED_TRACE(shape_str(dims) + (keepdim ? " keepdim" : ""));
      Dims all = dims;
      if (all.empty()) all = {0, 1, 2};
      Tensor s = sum(x, dims, keepdim), m = mean(x, dims, keepdim);
      EXPECT_EQ(s.shape(), reduced_shape(kShape, dims, keepdim));
      EXPECT_EQ(m.shape(), s.shape());
      EXPECT_TRUE(near_all(s.to_vector<double>(), naive_reduce(xv, kShape, all, ref_sum), 1e-12, 1e-12));
      EXPECT_TRUE(near_all(m.to_vector<double>(), naive_reduce(xv, kShape, all, ref_mean), 1e-12, 1e-12));
    }
  }
}

TEST(ReduceSumMean, NonContiguousInputsAndOtherDtypes) {
  Tensor base = leaf({4, 3, 2}, 2).detach();
  Tensor x = base.permute({2, 1, 0});  // (2, 3, 4), non-contiguous
  const auto xv = x.to_vector<double>();
  EXPECT_TRUE(near_all(sum(x, {1}).to_vector<double>(), naive_reduce(xv, kShape, {1}, ref_sum), 1e-12, 1e-12));
  EXPECT_TRUE(near_all(mean(x.to(DType::F32), {0, 2}).to_vector<double>(), naive_reduce(xv, kShape, {0, 2}, ref_mean),
                       1e-6, 1e-6));
  Tensor xb = x.to(DType::BF16);
  Tensor sb = sum(xb, {2});
  EXPECT_EQ(sb.dtype(), DType::BF16);
  EXPECT_TRUE(near_all(sb.to_vector<double>(), naive_reduce(xb.to_vector<double>(), kShape, {2}, ref_sum), 1e-2, 1.0 / 128));
  Tensor i = from_vector<int64_t>({(int64_t{1} << 53) + 1, 2, -3, 4}, {2, 2});
  Tensor si = sum(i, {1});
  EXPECT_EQ(si.dtype(), DType::I64);
  EXPECT_EQ(si.to_vector<int64_t>(), (std::vector<int64_t>{(int64_t{1} << 53) + 3, 1}));
  EXPECT_EQ(sum(i).to_vector<int64_t>(), (std::vector<int64_t>{(int64_t{1} << 53) + 4}));
}

// Dim sets whose reduced dims form one run (read in place, kept dims before and/or after the
// run, size-1 dims anywhere) and ones that do not (permuted copy), in f64, f32 and i64; the inner
// size exceeds one column block of the CPU kernel and the work its parallel grain.
TEST(ReduceSumMean, InPlaceAndPermutedLayoutsMatchNaiveLoops) {
  const Shape shape = {3, 1, 40, 260};
  Tensor x = leaf(shape, 5).detach();
  const auto xv = x.to_vector<double>();
  for (const Dims& dims : std::vector<Dims>{{0}, {2}, {0, 2}, {1, 2}, {0, 1}, {3}, {2, 3}, {0, 3}, {1}}) {
    SCOPED_TRACE(shape_str(dims));
    const auto want = naive_reduce(xv, shape, dims, ref_sum);
    EXPECT_TRUE(near_all(sum(x, dims).to_vector<double>(), want, 1e-12, 1e-12));
    EXPECT_TRUE(near_all(sum(x.to(DType::F32), dims).to_vector<double>(), want, 1e-4, 1e-5));
    EXPECT_TRUE(near_all(mean(x, dims, true).to_vector<double>(), naive_reduce(xv, shape, dims, ref_mean), 1e-12,
                         1e-12));
    Tensor xi = arange(0, static_cast<double>(numel_of(shape)), 1, DType::I64).reshape(shape);
    Tensor si = sum(xi, dims);
    EXPECT_EQ(si.dtype(), DType::I64);
    EXPECT_TRUE(near_all(si.to_vector<double>(), naive_reduce(xi.to_vector<double>(), shape, dims, ref_sum), 0, 0));
  }
}

// Summing a contiguous tensor over leading or middle dims allocates only the result (no
// transposed copy of the input).
TEST(ReduceSumMean, LeadingAndMiddleDimsAreReadWithoutACopy) {
  Tensor x = leaf({64, 1, 8, 512}, 6).detach().to(DType::F32);
  for (const Dims& dims : std::vector<Dims>{{0}, {0, 1, 2}, {2}}) {
    SCOPED_TRACE(shape_str(dims));
    const int64_t before = memory_stats(Device::cpu()).current_bytes;
    reset_peak_memory(Device::cpu());
    const Tensor s = sum(x, dims);
    EXPECT_LE(memory_stats(Device::cpu()).peak_bytes - before, s.numel() * 4);
  }
}

TEST(ReduceSumMean, ScalarAndSizeOneInputs) {
  Tensor s = scalar_tensor(2.5, DType::F64);
  EXPECT_EQ(sum(s).shape(), Shape{});
  EXPECT_DOUBLE_EQ(sum(s).item(), 2.5);
  EXPECT_DOUBLE_EQ(sum(s, {0}).item(), 2.5);
  EXPECT_DOUBLE_EQ(mean(s, {-1}, true).item(), 2.5);
  Tensor one = from_vector<double>({1, 2, 3}, {3, 1});
  EXPECT_EQ(sum(one, {1}).to_vector<double>(), (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(mean(one, {1}, true).shape(), (Shape{3, 1}));
}

TEST(ReduceMaxArgmax, MatchNaiveLoops) {
  Tensor x = leaf(kShape, 3).detach();
  const auto xv = x.to_vector<double>();
  for (int64_t dim : {0, 1, 2, -1, -2}) {
    for (bool keepdim : {false, true}) {
      SCOPED_TRACE(std::to_string(dim) + (keepdim ? " keepdim" : ""));
      Tensor m = max(x, dim, keepdim), a = argmax(x, dim, keepdim);
      EXPECT_EQ(m.shape(), reduced_shape(kShape, {dim}, keepdim));
      EXPECT_EQ(a.shape(), m.shape());
      EXPECT_EQ(a.dtype(), DType::I64);
      EXPECT_EQ(m.to_vector<double>(), naive_reduce(xv, kShape, {dim}, ref_max));
      EXPECT_EQ(a.to_vector<double>(), naive_reduce(xv, kShape, {dim}, ref_argmax));
    }
  }
  Tensor xt = x.transpose(0, 2);  // (4, 3, 2), non-contiguous
  EXPECT_EQ(max(xt, 1).to_vector<double>(), naive_reduce(xt.to_vector<double>(), {4, 3, 2}, {1}, ref_max));
  EXPECT_EQ(argmax(xt.to(DType::F32), 0).to_vector<double>(),
            naive_reduce(xt.to_vector<double>(), {4, 3, 2}, {0}, ref_argmax));
}

TEST(ReduceMaxArgmax, TiesPickTheFirstMaximum) {
  Tensor x = from_vector<float>({1, 3, 3, 0, /**/ 2, 2, 2, 2, /**/ -1, -5, -1, -1}, {3, 4});
  EXPECT_EQ(argmax(x, 1).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 0}));
  EXPECT_EQ(argmax(x.transpose(0, 1), 0).to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 0}));
  EXPECT_EQ(max(x, 1).to_vector<float>(), (std::vector<float>{3, 2, -1}));
  EXPECT_EQ(argmax(from_vector<int64_t>({4, 9, 9}, {3}), 0).item(), 1.0);
  // The gradient of max goes to the first maximal element only.
  Tensor g = from_vector<double>({1, 3, 3, 0, 2, 2, 2, 2}, {2, 4}).requires_grad_(true);
  sum(max(g, 1)).backward();
  EXPECT_EQ(g.grad().to_vector<double>(), (std::vector<double>{0, 1, 0, 0, 1, 0, 0, 0}));
}

TEST(ReduceLogSumExp, MatchesNaiveLoopsAndIsStable) {
  Tensor x = leaf(kShape, 4).detach();
  const auto xv = x.to_vector<double>();
  for (const Dims& dims : kDimSets) {
    SCOPED_TRACE(shape_str(dims));
    Dims all = dims;
    if (all.empty()) all = {0, 1, 2};
    Tensor y = logsumexp(x, dims, true);
    EXPECT_EQ(y.shape(), reduced_shape(kShape, dims, true));
    EXPECT_TRUE(near_all(y.to_vector<double>(), naive_reduce(xv, kShape, all, ref_logsumexp), 1e-12, 1e-12));
  }
  const double inf = std::numeric_limits<double>::infinity();
  for (DType dt : {DType::F64, DType::F32}) {
    SCOPED_TRACE(dtype_name(dt));
    Tensor big = from_vector<double>({1000, 1000, -1000, -1000, -inf, -inf, -inf, 0}, {4, 2}).to(dt);
    const auto y = logsumexp(big, {1}).to_vector<double>();
    EXPECT_NEAR(y[0], 1000 + std::log(2.0), 1e-4);
    EXPECT_NEAR(y[1], -1000 + std::log(2.0), 1e-4);
    EXPECT_EQ(y[2], -inf);
    EXPECT_EQ(y[3], 0.0);
  }
}

TEST(ReduceLogSumExp, GradientOfAnAllMinusInfRowIsZero) {
  const double inf = std::numeric_limits<double>::infinity();
  Tensor x = from_vector<double>({-inf, -inf, 0.0, std::log(3.0)}, {2, 2}).requires_grad_(true);
  sum(logsumexp(x, {1})).backward();
  EXPECT_TRUE(near_all(x.grad().to_vector<double>(), {0.0, 0.0, 0.25, 0.75}, 1e-12, 1e-12));
}

TEST(ReduceGradcheck, SumMeanLogSumExpContiguousAndNonContiguous) {
  for (const Dims& dims : kDimSets) {
    for (bool keepdim : {false, true}) {
      SCOPED_TRACE(shape_str(dims) + (keepdim ? " keepdim" : ""));
      EXPECT_TRUE(gradcheck([&](const Fn& x) { return sum(x[0], dims, keepdim); }, {leaf(kShape, 5)}));
      EXPECT_TRUE(gradcheck([&](const Fn& x) { return mean(x[0], dims, keepdim); }, {leaf(kShape, 6)}));
      EXPECT_TRUE(gradcheck([&](const Fn& x) { return logsumexp(x[0], dims, keepdim); }, {leaf(kShape, 7)}));
      // (4, 3, 2) permuted to (2, 3, 4); and a (2, 3, 8) sliced with step 2.
      EXPECT_TRUE(gradcheck([&](const Fn& x) { return sum(x[0].permute({2, 1, 0}), dims, keepdim); },
                            {leaf({4, 3, 2}, 8)}));
      EXPECT_TRUE(gradcheck([&](const Fn& x) { return mean(x[0].slice(2, 1, 8, 2), dims, keepdim); },
                            {leaf({2, 3, 8}, 9)}));
      EXPECT_TRUE(gradcheck([&](const Fn& x) { return logsumexp(x[0].permute({2, 1, 0}), dims, keepdim); },
                            {leaf({4, 3, 2}, 10)}));
    }
  }
}

TEST(ReduceGradcheck, MaxContiguousNonContiguousAndSizeOneDims) {
  for (int64_t dim : {0, 1, 2, -1}) {
    for (bool keepdim : {false, true}) {
      SCOPED_TRACE(std::to_string(dim) + (keepdim ? " keepdim" : ""));
      EXPECT_TRUE(gradcheck([&](const Fn& x) { return max(x[0], dim, keepdim); }, {leaf(kShape, 11)}));
      EXPECT_TRUE(gradcheck([&](const Fn& x) { return max(x[0].permute({2, 1, 0}), dim, keepdim); },
                            {leaf({4, 3, 2}, 12)}));
    }
  }
  // Reducing a dim of size 1: every element is its row's maximum.
  EXPECT_TRUE(gradcheck([](const Fn& x) { return max(x[0], 1); }, {leaf({3, 1}, 13)}));
  EXPECT_TRUE(gradcheck([](const Fn& x) { return max(x[0], 0, true); }, {leaf({1, 4}, 14)}));
  EXPECT_TRUE(gradcheck([](const Fn& x) { return max(x[0], 0); }, {leaf({}, 15)}));
  EXPECT_EQ(argmax(scalar_tensor(3.0), -1).item(), 0.0);
}

TEST(ReduceErrors, BadDimsAndDtypes) {
  Tensor x = zeros({2, 3});
  EXPECT_THROW(sum(x, {2}), Error);
  EXPECT_THROW(sum(x, {0, -2}), Error);  // the same dim twice
  EXPECT_THROW(max(x, -3), Error);
  EXPECT_THROW(mean(arange(0, 4, 1, DType::I64)), Error);
  EXPECT_THROW(max(zeros({2, 0}), 1), Error);
  try {
    sum(x, {5});
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[sum] dim 5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace longnet
