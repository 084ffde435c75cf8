// Matrix products: matmul, bmm, linear.
#include <algorithm>
#include <random>

#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/ops/matmul.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

std::vector<double> random_values(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = dist(gen);
  return v;
}

// C[b] = A[b] @ B[b] for row-major (batch, M, K) and (batch, K, N) buffers; a batch count of 1 on
// either side is shared by every batch.
std::vector<double> naive_matmul(const std::vector<double>& a, const std::vector<double>& b, int64_t batch,
                                 int64_t m, int64_t k, int64_t n) {
  const bool a_shared = static_cast<int64_t>(a.size()) == m * k, b_shared = static_cast<int64_t>(b.size()) == k * n;
  std::vector<double> c(static_cast<size_t>(batch * m * n), 0.0);
  for (int64_t q = 0; q < batch; ++q) {
    const double* pa = a.data() + (a_shared ? 0 : q * m * k);
    const double* pb = b.data() + (b_shared ? 0 : q * k * n);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t p = 0; p < k; ++p) s += pa[i * k + p] * pb[p * n + j];
        c[static_cast<size_t>((q * m + i) * n + j)] = s;
      }
    }
  }
  return c;
}

std::vector<double> transposed(const std::vector<double>& x, int64_t rows, int64_t cols) {
  std::vector<double> t(x.size());
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) t[static_cast<size_t>(j * rows + i)] = x[static_cast<size_t>(i * cols + j)];
  }
  return t;
}

Tensor as_f32(const std::vector<double>& v, const Shape& shape) {
  return from_vector<double>(v, shape).to(DType::F32);
}

TEST(Matmul, ForwardMatchesNaiveLoop) {
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, 1, 1}, {3, 5, 7}, {17, 9, 13}, {64, 64, 64}, {33, 70, 5}, {100, 1, 37}, {1, 129, 65}, {130, 67, 1},
      // Large enough to be split over threads: by rows, and by columns.
      {201, 300, 150}, {40, 300, 701}};
  uint32_t seed = 1;
  for (const auto& [m, k, n] : shapes) {
    const auto a = random_values(m * k, seed++), b = random_values(k * n, seed++);
    const Tensor expected = from_vector<double>(naive_matmul(a, b, 1, m, k, n), {m, n});
    EXPECT_TRUE(all_close(matmul(from_vector<double>(a, {m, k}), from_vector<double>(b, {k, n})), expected, 1e-12, 1e-12))
        << m << "x" << k << "x" << n << " f64";
    EXPECT_TRUE(all_close(matmul(as_f32(a, {m, k}), as_f32(b, {k, n})).to(DType::F64), expected, 1e-4, 1e-4))
        << m << "x" << k << "x" << n << " f32";
  }
}

TEST(Matmul, BatchedAndBroadcastMatchNaiveLoop) {
  const int64_t m = 5, k = 7, n = 3;
  const auto a = random_values(6 * m * k, 1), b = random_values(6 * k * n, 2), w = random_values(k * n, 3);
  // Batched: (6, M, K) @ (6, K, N).
  EXPECT_TRUE(all_close(matmul(from_vector<double>(a, {6, m, k}), from_vector<double>(b, {6, k, n})),
                        from_vector<double>(naive_matmul(a, b, 6, m, k, n), {6, m, n}), 1e-12));
  // b shared by every batch (the batch folds into M): (2, 3, M, K) @ (K, N).
  EXPECT_TRUE(all_close(matmul(from_vector<double>(a, {2, 3, m, k}), from_vector<double>(w, {k, n})),
                        from_vector<double>(naive_matmul(a, w, 6, m, k, n), {2, 3, m, n}), 1e-12));
  // Same through a size-1 batch dim of b, and with a 2-D a against a batched b.
  EXPECT_TRUE(all_close(matmul(from_vector<double>(a, {6, m, k}), from_vector<double>(w, {1, k, n})),
                        from_vector<double>(naive_matmul(a, w, 6, m, k, n), {6, m, n}), 1e-12));
  const std::vector<double> a0(a.begin(), a.begin() + m * k);
  EXPECT_TRUE(all_close(matmul(from_vector<double>(a0, {m, k}), from_vector<double>(b, {2, 3, k, n})),
                        from_vector<double>(naive_matmul(a0, b, 6, m, k, n), {2, 3, m, n}), 1e-12));
  // Both sides broadcast: (2, 1, M, K) @ (3, K, N) -> (2, 3, M, N).
  std::vector<double> expected;
  for (int64_t i = 0; i < 2; ++i) {
    const std::vector<double> ai(a.begin() + i * m * k, a.begin() + (i + 1) * m * k);
    const auto c = naive_matmul(ai, std::vector<double>(b.begin(), b.begin() + 3 * k * n), 3, m, k, n);
    expected.insert(expected.end(), c.begin(), c.end());
  }
  const std::vector<double> a2(a.begin(), a.begin() + 2 * m * k), b3(b.begin(), b.begin() + 3 * k * n);
  EXPECT_TRUE(all_close(matmul(from_vector<double>(a2, {2, 1, m, k}), from_vector<double>(b3, {3, k, n})),
                        from_vector<double>(expected, {2, 3, m, n}), 1e-12));
}

TEST(Matmul, ManyBatchesInParallelMatchNaiveLoop) {
  const int64_t batch = 9, m = 61, k = 50, n = 75;
  const auto a = random_values(batch * m * k, 21), b = random_values(batch * k * n, 22);
  const Tensor expected = from_vector<double>(naive_matmul(a, b, batch, m, k, n), {batch, m, n});
  EXPECT_TRUE(all_close(matmul(from_vector<double>(a, {batch, m, k}), from_vector<double>(b, {batch, k, n})),
                        expected, 1e-12));
  EXPECT_TRUE(all_close(matmul(as_f32(a, {batch, m, k}), as_f32(b, {batch, k, n})).to(DType::F64), expected,
                        1e-4, 1e-4));
}

TEST(Matmul, NonContiguousOperandsMatchNaiveLoop) {
  const int64_t m = 9, k = 11, n = 6;
  const auto a = random_values(m * k, 4), b = random_values(k * n, 5);
  const Tensor expected = from_vector<double>(naive_matmul(a, b, 1, m, k, n), {m, n});
  // Transposed views, read by BLAS in place.
  const Tensor at = from_vector<double>(transposed(a, m, k), {k, m}).transpose(0, 1);
  const Tensor bt = from_vector<double>(transposed(b, k, n), {n, k}).transpose(0, 1);
  EXPECT_TRUE(all_close(matmul(at, bt), expected, 1e-12));
  // Column windows of wider matrices: leading dim larger than the width.
  std::vector<double> wide(static_cast<size_t>(k * (n + 4)), 7.0);
  for (int64_t p = 0; p < k; ++p) {
    for (int64_t j = 0; j < n; ++j) wide[static_cast<size_t>(p * (n + 4) + j + 2)] = b[static_cast<size_t>(p * n + j)];
  }
  const Tensor bw = from_vector<double>(wide, {k, n + 4}).narrow(1, 2, n);
  EXPECT_TRUE(all_close(matmul(at, bw), expected, 1e-12));
  // Strided columns: no BLAS layout, copied first.
  std::vector<double> every_other(static_cast<size_t>(k * 2 * n), -3.0);
  for (size_t i = 0; i < b.size(); ++i) every_other[2 * i] = b[i];
  const Tensor bs = from_vector<double>(every_other, {k, 2 * n}).slice(1, 0, 2 * n, 2);
  EXPECT_TRUE(all_close(matmul(at, bs), expected, 1e-12));
  // A batched operand transposed in its last two dims.
  const Tensor at3 = from_vector<double>(transposed(a, m, k), {1, k, m}).expand({3, k, m}).transpose(1, 2);
  EXPECT_TRUE(all_close(matmul(at3, bs), expected.unsqueeze(0).expand({3, m, n}).contiguous(), 1e-12));
}

TEST(Matmul, OneDimensionalOperands) {
  const auto v = random_values(4, 6), w = random_values(4 * 3, 7), u = random_values(4, 8);
  const Tensor vt = from_vector<double>(v, {4}), wt = from_vector<double>(w, {4, 3});
  EXPECT_TRUE(all_close(matmul(vt, wt), from_vector<double>(naive_matmul(v, w, 1, 1, 4, 3), {3}), 1e-12));
  const auto wtr = transposed(w, 4, 3);
  EXPECT_TRUE(all_close(matmul(from_vector<double>(wtr, {3, 4}), vt),
                        from_vector<double>(naive_matmul(wtr, v, 1, 3, 4, 1), {3}), 1e-12));
  const Tensor dot = matmul(vt, from_vector<double>(u, {4}));
  EXPECT_EQ(dot.shape(), Shape{});
  EXPECT_NEAR(dot.item(), naive_matmul(v, u, 1, 1, 4, 1)[0], 1e-12);
  EXPECT_EQ(matmul(vt, from_vector<double>(random_values(2 * 4 * 3, 9), {2, 4, 3})).shape(), (Shape{2, 3}));
}

TEST(Matmul, EmptyInnerDimGivesZeros) {
  const Tensor c = matmul(zeros({3, 0}), zeros({0, 2}));
  EXPECT_EQ(c.shape(), (Shape{3, 2}));
  EXPECT_EQ(c.to_vector<float>(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(matmul(zeros({2, 0, 4}), zeros({4, 5})).shape(), (Shape{2, 0, 5}));
}

TEST(Matmul, Bf16ComputesInF32) {
  const auto a = random_values(6 * 10, 10), b = random_values(10 * 4, 11);
  const Tensor ab = as_f32(a, {6, 10}).to(DType::BF16), bb = as_f32(b, {10, 4}).to(DType::BF16);
  const Tensor c = matmul(ab, bb);
  EXPECT_EQ(c.dtype(), DType::BF16);
  // Reference from the bf16-rounded inputs; the result is rounded to bf16 (8 bits of mantissa).
  const auto ar = ab.to(DType::F64).to_vector<double>(), br = bb.to(DType::F64).to_vector<double>();
  EXPECT_TRUE(all_close(c.to(DType::F64), from_vector<double>(naive_matmul(ar, br, 1, 6, 10, 4), {6, 4}), 1e-2, 1e-2));
}

TEST(Matmul, GradientsOfProducts) {
  auto mm = [](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); };
  EXPECT_TRUE(gradcheck(mm, {leaf({3, 4}, 1), leaf({4, 5}, 2)}));
  EXPECT_TRUE(gradcheck(mm, {leaf({2, 3, 4}, 3), leaf({2, 4, 5}, 4)}));
  EXPECT_TRUE(gradcheck(mm, {leaf({3, 4}, 5), leaf({2, 3, 4, 5}, 6)}));    // 2-D @ 4-D
  EXPECT_TRUE(gradcheck(mm, {leaf({2, 3, 3, 4}, 7), leaf({4, 5}, 8)}));    // 4-D @ 2-D (folded)
  EXPECT_TRUE(gradcheck(mm, {leaf({2, 1, 3, 4}, 9), leaf({3, 4, 2}, 10)}));  // both broadcast
  EXPECT_TRUE(gradcheck(mm, {leaf({4}, 11), leaf({4, 3}, 12)}));           // 1-D @ 2-D
  EXPECT_TRUE(gradcheck(mm, {leaf({3, 4}, 13), leaf({4}, 14)}));           // 2-D @ 1-D
  EXPECT_TRUE(gradcheck(mm, {leaf({4}, 15), leaf({4}, 16)}));              // dot
  EXPECT_TRUE(gradcheck(mm, {leaf({4}, 17), leaf({2, 4, 3}, 18)}));        // 1-D @ batched
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return bmm(x[0], x[1]); },
                        {leaf({3, 2, 4}, 19), leaf({3, 4, 2}, 20)}));
}

TEST(Matmul, GradientsOfNonContiguousAndExpandedInputs) {
  // Transposed views (read in place by BLAS).
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0].transpose(0, 1), x[1].transpose(0, 1)); },
                        {leaf({4, 3}, 1), leaf({5, 4}, 2)}));
  // Slices: a column window and strided columns (copied).
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& x) { return matmul(x[0].narrow(1, 1, 4), x[1].slice(1, 0, 6, 2)); },
      {leaf({3, 6}, 3), leaf({4, 6}, 4)}));
  // Batch transposed in its last dims, and a batch dim made by expand.
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0].transpose(1, 2), x[1].expand({2, 3, 5})); },
                        {leaf({2, 3, 4}, 5), leaf({1, 3, 5}, 6)}));
  // Batch dims permuted, so rows do not fold.
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0].transpose(0, 1), x[1]); },
                        {leaf({3, 2, 4}, 7), leaf({4, 2}, 8)}));
}

TEST(Linear, MatchesNaiveLoop) {
  const int64_t rows = 2 * 7, in = 9, out = 5;
  const auto x = random_values(rows * in, 1), w = random_values(out * in, 2), b = random_values(out, 3);
  auto expected = naive_matmul(x, transposed(w, out, in), 1, rows, in, out);
  const Tensor y0 = linear(as_f32(x, {2, 7, in}), as_f32(w, {out, in}));
  EXPECT_TRUE(all_close(y0.to(DType::F64), from_vector<double>(expected, {2, 7, out}), 1e-5, 1e-5));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < out; ++j) expected[static_cast<size_t>(r * out + j)] += b[static_cast<size_t>(j)];
  }
  const Tensor y = linear(as_f32(x, {2, 7, in}), as_f32(w, {out, in}), as_f32(b, {out}));
  EXPECT_TRUE(all_close(y.to(DType::F64), from_vector<double>(expected, {2, 7, out}), 1e-5, 1e-5));
}

// The op written as its definition: matmul against the transposed weight, then the broadcast add.
Tensor linear_by_definition(const Tensor& x, const Tensor& w, const Tensor& b) {
  const Tensor y = matmul(x, transpose(w, 0, 1));
  return b.defined() ? add(y, b) : y;
}

TEST(Linear, MatchesMatmulPlusAdd) {
  uint32_t seed = 40;
  for (const Shape& xs : {Shape{6}, Shape{7, 6}, Shape{2, 7, 6}, Shape{2, 3, 5, 6}}) {
    const Tensor x = from_vector<double>(random_values(numel_of(xs), seed++), xs);
    const Tensor w = from_vector<double>(random_values(4 * 6, seed++), {4, 6});
    const Tensor b = from_vector<double>(random_values(4, seed++), {4});
    for (const Tensor& bias : {b, Tensor()}) {
      EXPECT_TRUE(all_close(linear(x, w, bias), linear_by_definition(x, w, bias), 1e-12, 1e-12))
          << shape_str(xs) << (bias.defined() ? " with bias" : " without bias");
    }
  }
  // Rows that do not fold into one strided matrix (batch dims swapped) are copied first.
  const Tensor x = from_vector<double>(random_values(3 * 4 * 5, 50), {3, 4, 5}).transpose(0, 1);
  const Tensor w = from_vector<double>(random_values(2 * 5, 51), {2, 5}), b = from_vector<double>(random_values(2, 52), {2});
  EXPECT_TRUE(all_close(linear(x, w, b), linear_by_definition(x, w, b), 1e-12, 1e-12));
  // A transposed weight view and a strided bias view are read as they are.
  const Tensor wt = from_vector<double>(random_values(5 * 2, 53), {5, 2}).transpose(0, 1);
  const Tensor bs = from_vector<double>(random_values(4, 54), {4}).slice(0, 0, 4, 2);
  EXPECT_TRUE(all_close(linear(x, wt, bs), linear_by_definition(x, wt, bs), 1e-12, 1e-12));
}

TEST(Linear, Bf16ComputesInF32AndRoundsOnce) {
  const auto x = random_values(9 * 40, 60), w = random_values(3 * 40, 61), b = random_values(3, 62);
  const Tensor xb = as_f32(x, {9, 40}).to(DType::BF16), wb = as_f32(w, {3, 40}).to(DType::BF16);
  const Tensor bb = as_f32(b, {3}).to(DType::BF16);
  const Tensor y = linear(xb, wb, bb);
  EXPECT_EQ(y.dtype(), DType::BF16);
  // Reference in f64 from the rounded inputs: only the final rounding to bf16 (2^-8 relative) differs.
  const Tensor ref = linear_by_definition(xb.to(DType::F64), wb.to(DType::F64), bb.to(DType::F64));
  EXPECT_TRUE(all_close(y.to(DType::F64), ref, 1e-2, 8e-3));
}

TEST(Linear, Gradients) {
  const auto lin = [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); };
  const auto lin_nb = [](const std::vector<Tensor>& x) { return linear(x[0], x[1]); };
  EXPECT_TRUE(gradcheck(lin, {leaf({3, 4}, 1), leaf({5, 4}, 2), leaf({5}, 3)}));
  EXPECT_TRUE(gradcheck(lin, {leaf({2, 3, 4}, 4), leaf({5, 4}, 5), leaf({5}, 6)}));
  EXPECT_TRUE(gradcheck(lin_nb, {leaf({3, 4}, 7), leaf({5, 4}, 8)}));
  EXPECT_TRUE(gradcheck(lin_nb, {leaf({2, 3, 4}, 9), leaf({5, 4}, 10)}));
  EXPECT_TRUE(gradcheck(lin_nb, {leaf({4}, 11), leaf({3, 4}, 12)}));
  // Non-foldable rows (copied) and a transposed weight view.
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return linear(x[0].transpose(0, 1), x[1], x[2]); },
                        {leaf({4, 2, 3}, 13), leaf({2, 3}, 14), leaf({2}, 15)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return linear(x[0], x[1].transpose(0, 1), x[2]); },
                        {leaf({2, 3, 4}, 16), leaf({4, 5}, 17), leaf({5}, 18)}));
}

TEST(Linear, ResidualGradients) {
  const auto lin = [](const std::vector<Tensor>& x) { return linear_residual(x[0], x[1], x[2], x[3]); };
  const auto lin_nb = [](const std::vector<Tensor>& x) { return linear_residual(x[0], x[1], Tensor(), x[2]); };
  EXPECT_TRUE(gradcheck(lin, {leaf({2, 3, 4}, 50), leaf({5, 4}, 51), leaf({5}, 52), leaf({2, 3, 5}, 53)}));
  EXPECT_TRUE(gradcheck(lin_nb, {leaf({3, 4}, 54), leaf({5, 4}, 55), leaf({3, 5}, 56)}));
  // A residual that is a view (a transposed one is copied for the product's C on a GPU).
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& x) { return linear_residual(x[0], x[1], x[2], x[3].transpose(0, 1)); },
      {leaf({3, 4}, 57), leaf({5, 4}, 58), leaf({5}, 59), leaf({5, 3}, 60)}));
}

TEST(Linear, ResidualIsBitForBitTheAddOnTheCpu) {
  for (DType dt : {DType::F32, DType::BF16}) {
    const Tensor x = leaf({4, 6}, 61).detach().to(dt), w = leaf({7, 6}, 62).detach().to(dt);
    const Tensor b = leaf({7}, 63).detach().to(dt), r = leaf({4, 7}, 64).detach().to(dt);
    EXPECT_TRUE(all_close(linear_residual(x, w, b, r).to(DType::F64), add(r, linear(x, w, b)).to(DType::F64), 0.0, 0.0))
        << dtype_name(dt);
  }
}

TEST(Linear, ResidualErrors) {
  const Tensor x = leaf({2, 3}, 65), w = leaf({4, 3}, 66);
  const std::string m = testing::error_message([&] { linear_residual(x, w, Tensor(), leaf({2, 3}, 67)); });
  EXPECT_NE(m.find("[linear] residual (2, 3) differs from the output (2, 4)"), std::string::npos) << m;
  const std::string d =
      testing::error_message([&] { linear_residual(x, w, Tensor(), leaf({2, 4}, 68).detach().to(DType::F32)); });
  EXPECT_NE(d.find("[linear]"), std::string::npos) << d;
}

TEST(Linear, GradientsOfOnlyTheInputsThatNeedThem) {
  const auto lin = [](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); };
  const auto lin_nb = [](const std::vector<Tensor>& x) { return linear(x[0], x[1]); };
  // Every subset of {x, weight, bias}: the others are constants (detached).
  for (int mask = 1; mask < 8; ++mask) {
    const auto pick = [&](const Tensor& t, int bit) { return (mask & bit) ? t : t.detach(); };
    const std::vector<Tensor> in = {pick(leaf({2, 3, 4}, 20 + mask), 1), pick(leaf({5, 4}, 30 + mask), 2),
                                    pick(leaf({5}, 40 + mask), 4)};
    EXPECT_TRUE(gradcheck(lin, in)) << "mask " << mask;
    if (mask < 4) {
      EXPECT_TRUE(gradcheck(lin_nb, {in[0], in[1]})) << "mask " << mask;
    }
  }
  // The bias alone: its gradient is the column sum of the upstream gradient.
  const Tensor b = leaf({2}, 52);
  linear(leaf({3, 4}, 50).detach(), leaf({2, 4}, 51).detach(), b)
      .backward(from_vector<double>({1, 2, 3, 4, 5, 6}, {3, 2}));
  ASSERT_TRUE(b.grad().defined());
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{9.0, 12.0}));
}

TEST(Linear, GradientsMatchTheirFormulas) {
  // dx = g @ W, dW = g^T @ x, db = column sums of g, against loops.
  const int64_t rows = 6, in = 5, out = 3;
  const auto xv = random_values(rows * in, 70), wv = random_values(out * in, 71), gv = random_values(rows * out, 72);
  const Tensor x = from_vector<double>(xv, {2, 3, in}).requires_grad_();
  const Tensor w = from_vector<double>(wv, {out, in}).requires_grad_();
  const Tensor b = zeros({out}, DType::F64).requires_grad_();
  linear(x, w, b).backward(from_vector<double>(gv, {2, 3, out}));
  EXPECT_TRUE(all_close(x.grad(), from_vector<double>(naive_matmul(gv, wv, 1, rows, out, in), {2, 3, in}), 1e-12));
  EXPECT_TRUE(all_close(w.grad(), from_vector<double>(naive_matmul(transposed(gv, rows, out), xv, 1, out, rows, in),
                                                      {out, in}), 1e-12));
  std::vector<double> db(out, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < out; ++j) db[static_cast<size_t>(j)] += gv[static_cast<size_t>(r * out + j)];
  }
  EXPECT_TRUE(all_close(b.grad(), from_vector<double>(db, {out}), 1e-12));
}

TEST(Linear, EmptyRowsAndFeatures) {
  // No rows: an empty output, zero weight and bias gradients.
  const Tensor x0 = zeros({0, 4}).requires_grad_(), w0 = ones({3, 4}).requires_grad_(), b0 = ones({3}).requires_grad_();
  const Tensor y0 = linear(x0, w0, b0);
  EXPECT_EQ(y0.shape(), (Shape{0, 3}));
  y0.backward(zeros({0, 3}));
  EXPECT_EQ(w0.grad().to_vector<float>(), std::vector<float>(12, 0.0f));
  EXPECT_EQ(b0.grad().to_vector<float>(), std::vector<float>(3, 0.0f));
  // No input features: the output is the bias on every row.
  const Tensor b = from_vector<double>({1.0, -2.0}, {2}).requires_grad_();
  const Tensor y = linear(zeros({3, 0}, DType::F64), zeros({2, 0}, DType::F64), b);
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{1.0, -2.0, 1.0, -2.0, 1.0, -2.0}));
  y.backward(from_vector<double>({1, 2, 3, 4, 5, 6}, {3, 2}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{9.0, 12.0}));
}

TEST(Linear, SavesInputAndWeightOnly) {
  const Tensor x = leaf({2, 3, 4}, 80), w = leaf({5, 4}, 81), b = leaf({5}, 82);
  const Tensor y = linear(x, w, b);
  ASSERT_TRUE(y.grad_fn());
  EXPECT_EQ(y.grad_fn()->name(), "LinearBackward");
  const std::vector<Tensor> saved = y.grad_fn()->saved_tensors();
  ASSERT_EQ(saved.size(), 2u);
  EXPECT_EQ(saved[0].storage(), x.storage());
  EXPECT_EQ(saved[1].storage(), w.storage());
  y.backward(ones({2, 3, 5}, DType::F64));
  for (const Tensor& t : y.grad_fn()->saved_tensors()) EXPECT_FALSE(t.defined());
}

TEST(Linear, ProfilesForwardAndBackwardUnderTheirNames) {
  const Tensor x = leaf({8, 4}, 90), w = leaf({3, 4}, 91), b = leaf({3}, 92);
  Profiler profiler(Device::cpu());
  linear(x, w, b).backward(ones({8, 3}, DType::F64));
  const auto entries = profiler.finish();
  const auto has = [&](const std::string& name) {
    return std::any_of(entries.begin(), entries.end(), [&](const ProfileEntry& e) { return e.name == name; });
  };
  EXPECT_TRUE(has("linear"));
  EXPECT_TRUE(has("LinearBackward"));
}

TEST(Matmul, ErrorsNameTheOpAndShapes) {
  EXPECT_EQ(testing::error_message([] { matmul(zeros({4, 8}), zeros({9, 2})); }), "[matmul] inner dims differ: (4, 8) @ (9, 2)");
  EXPECT_EQ(testing::error_message([] { matmul(zeros({3}), zeros({4, 2})); }), "[matmul] inner dims differ: (3) @ (4, 2)");
  EXPECT_EQ(testing::error_message([] { matmul(zeros({2, 3, 4}), zeros({3, 4, 5})); }),
            "[matmul] batch dims do not broadcast: (2, 3, 4) @ (3, 4, 5)");
  const std::string dt = testing::error_message([] { matmul(zeros({2, 3}), zeros({3, 2}, DType::F64)); });
  EXPECT_NE(dt.find("[matmul] dtype mismatch"), std::string::npos) << dt;
  EXPECT_NE(dt.find("(2, 3)"), std::string::npos) << dt;
  const std::string it = testing::error_message([] { matmul(zeros({2, 3}, DType::I64), zeros({3, 2}, DType::I64)); });
  EXPECT_NE(it.find("[matmul]"), std::string::npos) << it;
  EXPECT_NE(it.find("i64"), std::string::npos) << it;
  EXPECT_THROW(matmul(zeros({}), zeros({3})), Error);
  EXPECT_EQ(testing::error_message([] { bmm(zeros({2, 3, 4}), zeros({3, 4, 5})); }), "[bmm] batch sizes differ: (2, 3, 4) @ (3, 4, 5)");
  EXPECT_EQ(testing::error_message([] { bmm(zeros({2, 3, 4}), zeros({2, 5, 5})); }), "[bmm] inner dims differ: (2, 3, 4) @ (2, 5, 5)");
  const std::string lin = testing::error_message([] { linear(zeros({2, 3}), zeros({4, 5})); });
  EXPECT_NE(lin.find("[linear]"), std::string::npos) << lin;
  EXPECT_NE(lin.find("(4, 5)"), std::string::npos) << lin;
  EXPECT_THROW(linear(zeros({2, 5}), zeros({4, 5}), zeros({5})), Error);
  const std::string ldt = testing::error_message([] { linear(zeros({2, 5}), zeros({4, 5}), zeros({4}, DType::F64)); });
  EXPECT_NE(ldt.find("[linear] dtype mismatch"), std::string::npos) << ldt;
  const std::string lint = testing::error_message([] { linear(zeros({2, 5}, DType::I64), zeros({4, 5}, DType::I64)); });
  EXPECT_NE(lint.find("[linear]"), std::string::npos) << lint;
}

}  // namespace
}  // namespace longnet
