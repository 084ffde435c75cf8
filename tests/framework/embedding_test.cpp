// Embedding lookup: forward against a naive loop, gradients, determinism of the backward, errors.
#include "framework/ops/embedding.h"

#include <gtest/gtest.h>
#include <omp.h>

#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

// Rows of a (V, D) table picked by ids, by hand.
std::vector<double> naive_lookup(const std::vector<double>& w, int64_t dim, const std::vector<int64_t>& ids) {
  std::vector<double> out;
  for (int64_t id : ids) {
    for (int64_t d = 0; d < dim; ++d) out.push_back(w[static_cast<size_t>(id * dim + d)]);
  }
  return out;
}

TEST(Embedding, ForwardMatchesNaiveLoop) {
  Generator g(3);
  const Tensor w = randn({7, 5}, DType::F64, Device::cpu(), &g);
  const std::vector<int64_t> ids = {6, 0, 3, 3, 1, 6};
  const Tensor idx64 = from_vector<int64_t>(ids, {2, 3});
  const Tensor idx32 = from_vector<int32_t>({6, 0, 3, 3, 1, 6}, {2, 3});
  const Tensor want = from_vector<double>(naive_lookup(w.to_vector<double>(), 5, ids), {2, 3, 5});
  EXPECT_TRUE(all_close(embedding(w, idx64), want, 0.0, 0.0));
  EXPECT_TRUE(all_close(embedding(w, idx32), want, 0.0, 0.0));
  // A transposed table and transposed ids are read through their strides.
  const Tensor wt = w.transpose(0, 1).contiguous().transpose(0, 1);
  EXPECT_FALSE(wt.is_contiguous());
  EXPECT_TRUE(all_close(embedding(wt, idx64), want, 0.0, 0.0));
  const Tensor want_t =
      from_vector<double>(naive_lookup(w.to_vector<double>(), 5, {6, 3, 0, 1, 3, 6}), {3, 2, 5});
  EXPECT_TRUE(all_close(embedding(w, idx64.transpose(0, 1)), want_t, 0.0, 0.0));
  // Scalar ids give a (D,) row.
  EXPECT_TRUE(
      all_close(embedding(w, scalar_tensor(4, DType::I64)), w.narrow(0, 4, 1).reshape({5}), 0.0, 0.0));
}

TEST(Embedding, Bf16RowsAreCopiedExactly) {
  Generator g(4);
  const Tensor w = randn({6, 8}, DType::F32, Device::cpu(), &g).to(DType::BF16);
  const Tensor out = embedding(w, from_vector<int64_t>({5, 2}, {2}));
  EXPECT_EQ(out.dtype(), DType::BF16);
  const auto wv = w.to_vector<float>(), ov = out.to_vector<float>();
  for (int64_t d = 0; d < 8; ++d) {
    EXPECT_EQ(ov[static_cast<size_t>(d)], wv[static_cast<size_t>(5 * 8 + d)]);
    EXPECT_EQ(ov[static_cast<size_t>(8 + d)], wv[static_cast<size_t>(2 * 8 + d)]);
  }
}

TEST(Embedding, GradcheckContiguousAndStrided) {
  const Tensor ids = from_vector<int64_t>({1, 4, 1, 0, 4, 4, 2, 1}, {2, 4});
  EXPECT_TRUE(
      gradcheck([&](const std::vector<Tensor>& x) { return embedding(x[0], ids); }, {leaf({5, 3}, 1)}));
  // Table stored transposed; ids transposed too.
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& x) { return embedding(x[0].transpose(0, 1), ids.transpose(0, 1)); },
      {leaf({3, 5}, 2)}));
  const Tensor ids32 = from_vector<int32_t>({3, 3, 3}, {3});
  EXPECT_TRUE(
      gradcheck([&](const std::vector<Tensor>& x) { return embedding(x[0], ids32); }, {leaf({4, 2}, 3)}));
}

TEST(Embedding, BackwardScatterAddsRowsAndZeroesUnused) {
  const Tensor w = zeros({5, 3}, DType::F64).requires_grad_(true);
  const std::vector<int64_t> ids = {2, 0, 2, 2, 4};
  Generator g(9);
  const Tensor go = randn({5, 3}, DType::F64, Device::cpu(), &g);
  embedding(w, from_vector<int64_t>(ids, {5})).backward(go);
  std::vector<double> want(15, 0.0);
  const auto gv = go.to_vector<double>();
  for (size_t i = 0; i < ids.size(); ++i) {
    for (size_t d = 0; d < 3; ++d) want[static_cast<size_t>(ids[i]) * 3 + d] += gv[i * 3 + d];
  }
  EXPECT_TRUE(all_close(w.grad(), from_vector<double>(want, {5, 3}), 1e-12, 0.0));
}

TEST(Embedding, BackwardIsBitwiseIndependentOfThreadCount) {
  // About 16 repeats per id, large enough to run in parallel: float sums must not depend on the
  // order threads happen to finish in.
  Generator g(11);
  const Tensor ids = randint(0, 1024, {16384}, DType::I64, Device::cpu(), &g);
  const Tensor go = randn({16384, 64}, DType::F32, Device::cpu(), &g);
  auto grad_with = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor w = zeros({1024, 64}).requires_grad_(true);
    embedding(w, ids).backward(go);
    omp_set_num_threads(saved);
    return w.grad().to_vector<float>();
  };
  const auto one = grad_with(1);
  EXPECT_EQ(one, grad_with(2));
  EXPECT_EQ(one, grad_with(4));
}

TEST(Embedding, ErrorsNameTheIdAndShapes) {
  const Tensor w = zeros({10, 4});
  const std::string oob = testing::error_message([&] { embedding(w, from_vector<int64_t>({3, 12, 1}, {3})); });
  EXPECT_NE(oob.find("[embedding]"), std::string::npos) << oob;
  EXPECT_NE(oob.find("12"), std::string::npos) << oob;
  EXPECT_NE(oob.find("V = 10"), std::string::npos) << oob;
  EXPECT_NE(oob.find("(10, 4)"), std::string::npos) << oob;
  const std::string neg = testing::error_message([&] { embedding(w, from_vector<int32_t>({-1}, {1})); });
  EXPECT_NE(neg.find("id -1"), std::string::npos) << neg;
  const std::string fidx = testing::error_message([&] { embedding(w, zeros({2})); });
  EXPECT_NE(fidx.find("[embedding] indices must be i32 or i64, got f32"), std::string::npos) << fidx;
  const std::string w1 = testing::error_message([&] { embedding(zeros({10}), from_vector<int64_t>({1}, {1})); });
  EXPECT_NE(w1.find("[embedding] weight must be (V, D), got (10)"), std::string::npos) << w1;
  EXPECT_THROW(embedding(zeros({3, 2}, DType::I64), from_vector<int64_t>({1}, {1})), Error);
}

}  // namespace
}  // namespace longnet
