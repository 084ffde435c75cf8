// cat, stack, split and chunk: forward against naive loops, gradients, views, errors.
#include "framework/ops/shape_ops.h"

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

// Concatenation of 3-D row-major blocks along `dim`, by hand.
std::vector<double> naive_cat3(const std::vector<Tensor>& ts, int64_t dim) {
  Shape out = ts[0].shape();
  out[static_cast<size_t>(dim)] = 0;
  for (const Tensor& t : ts) out[static_cast<size_t>(dim)] += t.size(dim);
  std::vector<double> r(static_cast<size_t>(numel_of(out)));
  int64_t base = 0;
  for (const Tensor& t : ts) {
    const auto v = t.to_vector<double>();
    const Shape& s = t.shape();
    for (int64_t i = 0; i < s[0]; ++i) {
      for (int64_t j = 0; j < s[1]; ++j) {
        for (int64_t k = 0; k < s[2]; ++k) {
          int64_t c[3] = {i, j, k};
          c[dim] += base;
          r[static_cast<size_t>((c[0] * out[1] + c[1]) * out[2] + c[2])] =
              v[static_cast<size_t>((i * s[1] + j) * s[2] + k)];
        }
      }
    }
    base += t.size(dim);
  }
  return r;
}

TEST(ShapeOps, CatMatchesNaiveLoopOnEveryDim) {
  Generator g(1);
  for (int64_t dim = 0; dim < 3; ++dim) {
    Shape sa = {2, 3, 4}, sb = {2, 3, 4};
    sb[static_cast<size_t>(dim)] = 1;
    const Tensor a = randn(sa, DType::F64, Device::cpu(), &g);
    const Tensor b = randn(sb, DType::F64, Device::cpu(), &g);
    const Tensor c = randn(sa, DType::F64, Device::cpu(), &g);
    Shape so = sa;
    so[static_cast<size_t>(dim)] = 2 * sa[static_cast<size_t>(dim)] + 1;
    const Tensor want = from_vector<double>(naive_cat3({a, b, c}, dim), so);
    EXPECT_TRUE(all_close(cat({a, b, c}, dim), want, 0.0, 0.0)) << "dim " << dim;
    EXPECT_TRUE(all_close(cat({a, b, c}, dim - 3), want, 0.0, 0.0)) << "dim " << dim - 3;
  }
}

TEST(ShapeOps, CatReadsStridedInputsAndKeepsDtype) {
  const Tensor a = arange(0, 12, 1, DType::F32).reshape({3, 4}).transpose(0, 1);  // (4, 3)
  const Tensor b = arange(100, 104, 1, DType::F32).reshape({4, 1});
  const Tensor out = cat({a, b}, 1);
  EXPECT_EQ(out.to_vector<float>(),
            (std::vector<float>{0, 4, 8, 100, 1, 5, 9, 101, 2, 6, 10, 102, 3, 7, 11, 103}));
  const Tensor h = cat({a.to(DType::BF16), b.to(DType::BF16)}, 1);
  EXPECT_EQ(h.dtype(), DType::BF16);
  EXPECT_EQ(h.to(DType::F32).to_vector<float>(), out.to_vector<float>());
  // Empty pieces are allowed.
  EXPECT_EQ(cat({a, zeros({4, 0})}, 1).shape(), (Shape{4, 3}));
}

TEST(ShapeOps, CatGradcheck) {
  auto f = [](const std::vector<Tensor>& x) { return cat({x[0], x[1], x[2]}, 1); };
  EXPECT_TRUE(gradcheck(f, {leaf({2, 3, 2}, 1), leaf({2, 1, 2}, 2), leaf({2, 4, 2}, 3)}));
  // Non-contiguous inputs: transposed and sliced leaves.
  auto g = [](const std::vector<Tensor>& x) {
    return cat({x[0].transpose(0, 1), x[1].slice(1, 0, 6, 2)}, 0);
  };
  EXPECT_TRUE(gradcheck(g, {leaf({3, 2}, 4), leaf({4, 6}, 5)}));
  // An input that needs no gradient is skipped; the same tensor twice accumulates.
  const Tensor fixed = ones({2, 2}, DType::F64);
  auto h = [&](const std::vector<Tensor>& x) { return cat({x[0], fixed, x[0]}, -1); };
  EXPECT_TRUE(gradcheck(h, {leaf({2, 3}, 6)}));
}

TEST(ShapeOps, StackMatchesNaiveLoopAndGradchecks) {
  const Tensor a = arange(0, 6, 1, DType::F64).reshape({2, 3});
  const Tensor b = arange(10, 16, 1, DType::F64).reshape({2, 3});
  const Tensor s1 = stack({a, b}, 1);  // (2, 2, 3): s1[i][k][j] = (k ? b : a)[i][j]
  EXPECT_EQ(s1.shape(), (Shape{2, 2, 3}));
  std::vector<double> want;
  for (int i = 0; i < 2; ++i) {
    for (int k = 0; k < 2; ++k) {
      for (int j = 0; j < 3; ++j) want.push_back((k ? 10.0 : 0.0) + i * 3 + j);
    }
  }
  EXPECT_EQ(s1.to_vector<double>(), want);
  EXPECT_EQ(stack({a, b}, -1).shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(stack({a}, 0).shape(), (Shape{1, 2, 3}));
  auto f = [](const std::vector<Tensor>& x) { return stack({x[0], x[1].transpose(0, 1)}, 2); };
  EXPECT_TRUE(gradcheck(f, {leaf({3, 2}, 7), leaf({2, 3}, 8)}));
}

TEST(ShapeOps, SplitAndChunkAreViewsWithExpectedSizes) {
  const Tensor x = arange(0, 20, 1, DType::F32).reshape({2, 10});
  const auto pieces = split(x, 4, 1);
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[2].shape(), (Shape{2, 2}));
  EXPECT_EQ(pieces[1].to_vector<float>(), (std::vector<float>{4, 5, 6, 7, 14, 15, 16, 17}));
  for (const Tensor& p : pieces) EXPECT_EQ(p.storage(), x.storage());
  const auto sized = split(x, std::vector<int64_t>{1, 0, 9}, -1);
  ASSERT_EQ(sized.size(), 3u);
  EXPECT_EQ(sized[1].shape(), (Shape{2, 0}));
  EXPECT_EQ(sized[2].to_vector<float>()[0], 1.0f);
  const auto chunks = chunk(x, 4, 1);  // 10 = 3 + 3 + 2 + 2
  ASSERT_EQ(chunks.size(), 4u);
  std::vector<int64_t> sizes;
  for (const Tensor& c : chunks) sizes.push_back(c.size(1));
  EXPECT_EQ(sizes, (std::vector<int64_t>{3, 3, 2, 2}));
  EXPECT_EQ(chunks[3].to_vector<float>(), (std::vector<float>{8, 9, 18, 19}));
  EXPECT_EQ(chunk(x, 2, 0)[1].to_vector<float>()[0], 10.0f);
  EXPECT_EQ(split(zeros({0, 3}), 2).size(), 1u);
  // Pieces put back together give the input.
  EXPECT_TRUE(all_close(cat(chunks, 1), x, 0.0, 0.0));
}

TEST(ShapeOps, SplitAndChunkGradcheck) {
  auto f = [](const std::vector<Tensor>& x) {
    const auto p = split(x[0], 2, 1);
    return mul(p[0], p[1]);
  };
  EXPECT_TRUE(gradcheck(f, {leaf({3, 5}, 9)}));
  auto g = [](const std::vector<Tensor>& x) {
    const auto p = chunk(x[0].transpose(0, 1), 3, 0);  // non-contiguous input
    return add(p[2], split(x[0].transpose(0, 1), std::vector<int64_t>{1, 1, 2}, 0)[2]);
  };
  EXPECT_TRUE(gradcheck(g, {leaf({3, 4}, 10)}));
}

TEST(ShapeOps, ErrorsShowOpAndShapes) {
  EXPECT_NE(testing::error_message([] { cat({}); }).find("[cat] empty list"), std::string::npos);
  EXPECT_NE(testing::error_message([] { stack({}); }).find("[stack] empty list"), std::string::npos);
  const std::string sizes = testing::error_message([] { cat({zeros({2, 3}), zeros({3, 3})}, 1); });
  EXPECT_NE(sizes.find("[cat]"), std::string::npos) << sizes;
  EXPECT_NE(sizes.find("(2, 3), (3, 3)"), std::string::npos) << sizes;
  const std::string ndim = testing::error_message([] { cat({zeros({2, 3}), zeros({2, 3, 1})}, 0); });
  EXPECT_NE(ndim.find("(2, 3), (2, 3, 1)"), std::string::npos) << ndim;
  const std::string dt = testing::error_message([] { cat({zeros({2}), zeros({2}, DType::F64)}); });
  EXPECT_NE(dt.find("[cat] dtype mismatch: f32 vs f64"), std::string::npos) << dt;
  EXPECT_NE(dt.find("(2), (2)"), std::string::npos) << dt;
  const std::string st = testing::error_message([] { stack({zeros({2, 3}), zeros({3, 2})}); });
  EXPECT_NE(st.find("[stack] all shapes must be equal: (2, 3), (3, 2)"), std::string::npos) << st;
  EXPECT_THROW(cat({zeros({2})}, 1), Error);
  const std::string sp = testing::error_message([] { split(zeros({4, 5}), std::vector<int64_t>{2, 2}, 1); });
  EXPECT_NE(sp.find("[split] sizes (2, 2) sum to 4, not to size 5 of dim 1 of shape (4, 5)"),
            std::string::npos)
      << sp;
  EXPECT_NE(testing::error_message([] { split(zeros({4}), 0); }).find("[split] split_size must be positive"),
            std::string::npos);
  EXPECT_NE(testing::error_message([] { chunk(zeros({4}), 0); }).find("[chunk] chunks must be positive"),
            std::string::npos);
}

}  // namespace
}  // namespace longnet
