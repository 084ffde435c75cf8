// Matrix products: matmul, bmm, linear.
#include <random>

#include <gtest/gtest.h>

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

TEST(Linear, Gradients) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); },
                        {leaf({2, 3, 4}, 1), leaf({5, 4}, 2), leaf({5}, 3)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return linear(x[0], x[1]); },
                        {leaf({3, 4}, 4), leaf({5, 4}, 5)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return linear(x[0].transpose(0, 1), x[1], x[2]); },
                        {leaf({4, 2, 3}, 6), leaf({2, 3}, 7), leaf({2}, 8)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return linear(x[0], x[1]); },
                        {leaf({4}, 9), leaf({3, 4}, 10)}));
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
}

}  // namespace
}  // namespace longnet
