// The sub-LN GELU feed-forward recomputes its GELU in backward: the same output and gradients as
// the plain composition of its ops, bit for bit, with one hidden-sized activation less in the graph.
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

TEST(FeedForwardMemory, RecomputedGeluEqualsThePlainOpsAndKeepsLess) {
  Initializer init(11, true);
  FeedForwardConfig c;
  c.dim = 16;
  c.hidden = 64;
  c.sub_ln = true;
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
  EXPECT_TRUE(testing::all_close(fused.y, plain.y, 0.0, 0.0));
  ASSERT_EQ(fused.grads.size(), plain.grads.size());
  for (size_t i = 0; i < fused.grads.size(); ++i) {
    EXPECT_TRUE(testing::all_close(fused.grads[i], plain.grads[i], 0.0, 0.0)) << "gradient " << i;
  }
  // The plain graph also keeps GELU's output (the norm's input) and the norm's mean and rstd.
  EXPECT_EQ(plain.kept - fused.kept, rows * c.hidden * 4 + 2 * rows * 4);
}

}  // namespace
}  // namespace longnet
