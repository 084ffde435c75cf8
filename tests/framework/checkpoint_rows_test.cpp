// checkpoint_rows (framework/autograd/checkpoint.h): a row-wise block checkpointed over chunks of
// rows gives the direct block's values and gradients, passes finite differences, keeps only its
// input, fires parameter hooks once, replays dropout, and rejects bad arguments.
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/checkpoint.h"
#include "framework/autograd/node.h"
#include "framework/ops/dropout.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::leaf;

// A feed-forward sublayer in miniature: norm, product, GELU, product. (R, 4) -> (R, 3).
struct Block {
  Tensor ln_w = leaf({4}, 31), ln_b = leaf({4}, 32), w1 = leaf({6, 4}, 33), b1 = leaf({6}, 34), w2 = leaf({3, 6}, 35);

  Tensor operator()(const Tensor& x) const { return linear(gelu(linear(layer_norm(x, ln_w, ln_b), w1, b1)), w2); }
  std::vector<Tensor> params() const { return {ln_w, ln_b, w1, b1, w2}; }
  void clear_grads() const {
    for (Tensor p : params()) p.set_grad(Tensor());
  }
};

// The weighted sum that both runs differentiate. y (..., 3).
Tensor weighted(const Tensor& y) {
  Generator g(7);
  return sum(mul(y, randn(y.shape(), DType::F64, Device::cpu(), &g)));
}

TEST(CheckpointRows, MatchesTheDirectBlockForEveryChunking) {
  const Block block;
  const RowwiseFn fn = [&](const Tensor& x) { return block(x); };
  // 10 rows of (2, 5, 4): chunks that divide them, that do not, one row, all rows and more.
  for (int64_t rows : {1, 3, 5, 10, 64}) {
    SCOPED_TRACE(rows);
    const Tensor x_direct = leaf({2, 5, 4}, 36), x_rows = leaf({2, 5, 4}, 36);
    block.clear_grads();
    const Tensor want = block(x_direct);
    weighted(want).backward();
    std::vector<Tensor> direct{x_direct.grad()};
    for (const Tensor& p : block.params()) direct.push_back(p.grad());
    block.clear_grads();
    const Tensor got = checkpoint_rows(fn, x_rows, rows);
    ASSERT_EQ(got.shape(), (Shape{2, 5, 3}));
    EXPECT_EQ(got.grad_fn()->name(), "CheckpointRowsBackward");
    EXPECT_TRUE(all_close(got, want, 1e-13, 1e-13));
    weighted(got).backward();
    std::vector<Tensor> chunked{x_rows.grad()};
    for (const Tensor& p : block.params()) chunked.push_back(p.grad());
    for (size_t i = 0; i < direct.size(); ++i) {
      SCOPED_TRACE(i);
      ASSERT_TRUE(chunked[i].defined());
      EXPECT_TRUE(all_close(chunked[i], direct[i], 1e-12, 1e-12));
    }
  }
}

TEST(CheckpointRows, PassesFiniteDifferencesForInputAndParameters) {
  const Tensor w = leaf({3, 4}, 37), b = leaf({3}, 38);
  const auto fn = [&](const std::vector<Tensor>& in) {
    const RowwiseFn block = [&](const Tensor& x) { return tanh(linear(layer_norm(x, in[1], Tensor()), in[2], b)); };
    return checkpoint_rows(block, in[0], 2);
  };
  // The parameters are inputs of fn here so that the check perturbs them too.
  EXPECT_TRUE(testing::gradcheck(fn, {leaf({5, 4}, 39), leaf({4}, 40), w}));
}

TEST(CheckpointRows, KeepsOnlyItsInputForTheBackward) {
  const Block block;
  const Tensor x = leaf({7, 4}, 41);
  const Tensor y = checkpoint_rows([&](const Tensor& t) { return block(t); }, x, 3);
  const std::vector<Tensor> saved = y.grad_fn()->saved_tensors();
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(saved[0].raw_data(), x.raw_data());
  EXPECT_EQ(saved[0].shape(), x.shape());
}

TEST(CheckpointRows, ReachesParametersWhenTheInputNeedsNoGradient) {
  const Block block;
  const Tensor x = leaf({6, 4}, 42).detach();
  block.clear_grads();
  weighted(block(x)).backward();
  const Tensor want = block.w1.grad();
  block.clear_grads();
  weighted(checkpoint_rows([&](const Tensor& t) { return block(t); }, x, 4)).backward();
  ASSERT_TRUE(block.w1.grad().defined());
  EXPECT_TRUE(all_close(block.w1.grad(), want, 1e-12, 1e-12));
}

// Gradient reduction across replicas starts from these hooks: a parameter must be announced once
// per backward, complete, not once per chunk.
TEST(CheckpointRows, ParameterHooksFireOnceWithTheWholeGradient) {
  const Block block;
  std::vector<Tensor> seen;
  block.w2.register_grad_ready_hook([&](const Tensor& g) { seen.push_back(g.clone()); });
  const Tensor x = leaf({9, 4}, 43);
  block.clear_grads();
  weighted(checkpoint_rows([&](const Tensor& t) { return block(t); }, x, 2)).backward();
  ASSERT_EQ(seen.size(), 1u);
  const Tensor chunked = block.w2.grad();
  block.clear_grads();
  seen.clear();
  weighted(block(x)).backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_TRUE(all_close(chunked, block.w2.grad(), 1e-12, 1e-12));
}

TEST(CheckpointRows, DropoutMasksRepeatInTheBackward) {
  // y = x * mask / (1 - p) and dy/dx = mask / (1 - p): with the recomputed masks equal to the
  // forward's, y = x * dx exactly, in every chunk.
  const Tensor x = leaf({12, 8}, 44);
  const Tensor y = checkpoint_rows([](const Tensor& t) { return dropout(t, 0.5, true); }, x, 5);
  sum(y).backward();
  const std::vector<double> yv = y.to_vector<double>(), xv = x.to_vector<double>(), gv = x.grad().to_vector<double>();
  int64_t kept = 0;
  for (size_t i = 0; i < yv.size(); ++i) {
    EXPECT_EQ(yv[i], xv[i] * gv[i]) << i;
    kept += gv[i] != 0.0 ? 1 : 0;
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, static_cast<int64_t>(yv.size()));
}

TEST(CheckpointRows, RejectsBadArguments) {
  const Tensor x = leaf({4, 3}, 45);
  const RowwiseFn same = [](const Tensor& t) { return tanh(t); };
  std::string m = testing::error_message([&] { checkpoint_rows(same, x, 0); });
  EXPECT_NE(m.find("rows per chunk must be positive, got 0"), std::string::npos) << m;
  m = testing::error_message([&] { checkpoint_rows(same, Tensor(), 2); });
  EXPECT_NE(m.find("expects x (..., C)"), std::string::npos) << m;
  // Not row-wise: a block that sums over its rows.
  const RowwiseFn pooled = [](const Tensor& t) { return sum(t, {0}, true); };
  m = testing::error_message([&] { checkpoint_rows(pooled, x, 2); });
  EXPECT_NE(m.find("must map (rows, C) to (rows, C'); (2, 3) gave (1, 3)"), std::string::npos) << m;
}

}  // namespace
}  // namespace longnet
