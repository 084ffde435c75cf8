// The sub-LN GELU feed-forward keeps fc1's output alone: fused (gelu_layer_norm) it equals the plain
// composition of its ops to f32 precision; with activation dropout between the two it recomputes
// them in backward, bit for bit as when keeping them. Either way with one hidden-sized activation
// less in the graph.
#include <gtest/gtest.h>

#include "framework/core/storage.h"
#include "framework/ops/ops.h"
#include "layers/feed_forward.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

struct FfnRun {
  Tensor y;
  std::vector<Tensor> grads;  // of x, then of the parameters in order
  int64_t kept = 0;           // bytes the graph added over the forward
};

// fc2(ffn_layernorm(gelu(fc1(x)))) of `ffn`'s parameters, through `forward`.
template <class Forward>
FfnRun run_ffn(const FeedForward& ffn, const Tensor& x0, Forward forward) {
  FfnRun r;
  const Tensor x = x0.detach().requires_grad_(true);
  for (const Tensor& p : ffn.parameters()) p.set_grad(Tensor());
  const int64_t before = memory_stats(Device::cpu()).current_bytes;
  r.y = forward(x);
  r.kept = memory_stats(Device::cpu()).current_bytes - before;
  sum(mul(r.y, r.y)).backward();
  r.grads.push_back(x.grad());
  for (const Tensor& p : ffn.parameters()) r.grads.push_back(p.grad().clone());
  return r;
}

FeedForwardConfig sub_ln_config(double activation_dropout, bool recompute) {
  FeedForwardConfig c;
  c.dim = 16;
  c.hidden = 64;
  c.sub_ln = true;
  c.activation_dropout = activation_dropout;
  c.recompute_activation = recompute;
  return c;
}

TEST(FeedForwardMemory, FusedGeluNormEqualsThePlainOpsAndKeepsLess) {
  Initializer init(11, true);
  const FeedForwardConfig c = sub_ln_config(0.0, true);
  const FeedForward ffn(c, init);
  const int64_t rows = 40;
  const Tensor x = randn({rows / 4, 4, c.dim}, DType::F32);
  const StateDict s = ffn.state_dict();
  const FfnRun fused = run_ffn(ffn, x, [&](const Tensor& in) { return ffn.forward(in); });
  const FfnRun plain = run_ffn(ffn, x, [&](const Tensor& in) {
    const Tensor h = gelu(linear(in, s.at("fc1.weight"), s.at("fc1.bias")));
    const Tensor n = layer_norm(h, s.at("ffn_layernorm.weight"), s.at("ffn_layernorm.bias"), 1e-5);
    return linear(n, s.at("fc2.weight"), s.at("fc2.bias"));
  });
  // The fused op takes GELU's output unrounded, the plain one rounded to f32: equal to f32's
  // precision, not bit for bit.
  EXPECT_TRUE(testing::all_close(fused.y, plain.y, 1e-5, 1e-5));
  ASSERT_EQ(fused.grads.size(), plain.grads.size());
  for (size_t i = 0; i < fused.grads.size(); ++i) {
    EXPECT_TRUE(testing::all_close(fused.grads[i], plain.grads[i], 1e-4, 1e-4)) << "gradient " << i;
  }
  // The plain graph also keeps GELU's output (the norm's input).
  EXPECT_EQ(plain.kept - fused.kept, rows * c.hidden * 4);
}

TEST(FeedForwardMemory, RecomputedGeluUnderActivationDropoutEqualsKeepingItAndKeepsLess) {
  // Activation dropout sits between GELU and the sub-LN, so they cannot fuse: the recomputing
  // block (with the same dropout masks, replayed) against keeping every activation, bit for bit.
  Initializer init(12, true);
  FeedForward recomputed(sub_ln_config(0.25, true), init);
  Initializer init2(12, true);
  FeedForward kept(sub_ln_config(0.25, false), init2);
  const int64_t rows = 40;
  const Tensor x = randn({rows, 16}, DType::F32);
  manual_seed(5);
  const FfnRun a = run_ffn(recomputed, x, [&](const Tensor& in) { return recomputed.forward(in); });
  manual_seed(5);
  const FfnRun b = run_ffn(kept, x, [&](const Tensor& in) { return kept.forward(in); });
  EXPECT_TRUE(testing::all_close(a.y, b.y, 0.0, 0.0));
  ASSERT_EQ(a.grads.size(), b.grads.size());
  for (size_t i = 0; i < a.grads.size(); ++i) {
    EXPECT_TRUE(testing::all_close(a.grads[i], b.grads[i], 0.0, 0.0)) << "gradient " << i;
  }
  EXPECT_LT(a.kept, b.kept - rows * 64 * 4);  // at least GELU's output less
}

}  // namespace
}  // namespace longnet
