// ParamCastScope: in_dtype_of finds the scope's conversions (innermost scope first, only for the
// scope's dtype, only while it lives), and a TransformerLayer converting its parameters in one
// batched cast gives the same outputs and gradients, bit for bit, as one cast per parameter: plain,
// with a chunked feed-forward (recomputed after the scope is gone), under the layer's checkpoint;
// on the CPU and on the GPU.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/ops/ops.h"
#include "layers/linear.h"
#include "layers/transformer.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

std::vector<double> exact(const Tensor& t) { return t.to(Device::cpu()).to(DType::F64).to_vector<double>(); }

TEST(ParamCastScope, InDtypeOfUsesTheInnermostScopeOfItsDtype) {
  Initializer init(3);
  Linear a(4, 3, true, init), b(3, 2, true, init);
  const Tensor x16 = randn({2, 4}, DType::BF16);
  const Tensor x64 = randn({2, 4}, DType::F64);
  const std::string single = in_dtype_of(a.weight(), x16).grad_fn()->name();
  {
    const std::vector<Tensor> outer_params = {a.weight(), a.bias()};
    const ParamCastScope outer(outer_params, DType::BF16);
    const Tensor w = in_dtype_of(a.weight(), x16);
    EXPECT_EQ(w.grad_fn()->name(), "CastManyBackward");
    EXPECT_EQ(in_dtype_of(a.weight(), x16).impl(), w.impl()) << "the scope's conversion, each time";
    EXPECT_EQ(in_dtype_of(a.bias(), x16).grad_fn(), w.grad_fn()) << "one node for the scope";
    EXPECT_EQ(in_dtype_of(a.weight(), x64).grad_fn()->name(), single) << "another dtype: a cast of its own";
    EXPECT_EQ(in_dtype_of(b.weight(), x16).grad_fn()->name(), single) << "not in the scope";
    {
      const std::vector<Tensor> inner_params = {a.weight(), b.weight()};
      const ParamCastScope inner(inner_params, DType::BF16);
      const Tensor iw = in_dtype_of(a.weight(), x16);
      EXPECT_NE(iw.impl(), w.impl()) << "the innermost scope wins";
      EXPECT_EQ(in_dtype_of(b.weight(), x16).grad_fn(), iw.grad_fn());
      EXPECT_EQ(in_dtype_of(a.bias(), x16).grad_fn(), w.grad_fn()) << "the outer scope still holds the bias";
    }
    EXPECT_EQ(in_dtype_of(a.weight(), x16).impl(), w.impl()) << "the outer scope again";
    EXPECT_EQ(in_dtype_of(b.weight(), x16).grad_fn()->name(), single);
  }
  EXPECT_EQ(in_dtype_of(a.weight(), x16).grad_fn()->name(), single) << "no scope left";
  const std::vector<Tensor> same = {a.weight()};
  const ParamCastScope f32(same, DType::F32);
  EXPECT_EQ(in_dtype_of(a.weight(), randn({2, 4})).impl(), a.weight().impl()) << "already in the dtype";
}

struct LayerRun {
  std::vector<Tensor> tensors;  // output, x's and memory's gradients, every parameter's gradient
  int64_t casts = 0, batched_casts = 0;  // per-tensor casts and cast_many calls, forward and backward
};

// A small decoder layer with cross-attention on `device`: f32 parameters, bf16 activations, dropout.
LayerRun run_layer(Device device, bool batched, const std::string& ffn_checkpoint, bool layer_checkpoint) {
  TransformerLayerConfig c;
  c.dim = 64;  // head dim 32: the GPU attention kernels take 32, 64 and 128
  c.heads = 2;
  c.ffn_dim = 96;
  c.cross_attention = true;
  c.dropout = 0.2;
  c.activation_dropout = 0.1;
  c.ffn_checkpoint = ffn_checkpoint;
  c.ffn_checkpoint_chunk = 5;
  c.checkpoint = layer_checkpoint;
  c.batch_param_casts = batched;
  Initializer init(21);
  DecoderLayer layer(c, init);
  {
    NoGradGuard no_grad;
    Generator g(22);
    for (const Tensor& p : layer.parameters()) add_(p, mul(randn(p.shape(), p.dtype(), Device::cpu(), &g), 0.3));
  }
  layer.to(device);
  Generator g(23);
  const Tensor x = randn({2, 6, 64}, DType::BF16, Device::cpu(), &g).to(device).requires_grad_(true);
  const Tensor mem = randn({2, 3, 64}, DType::BF16, Device::cpu(), &g).to(device).requires_grad_(true);
  manual_seed(24);
  LayerRun r;
  Profiler profiler(device);
  LayerContext ctx;
  ctx.memory = mem;
  const Tensor y = layer.forward(x, ctx).x;
  sum(mul(y, y).to(DType::F32)).backward();
  for (const ProfileEntry& e : profiler.finish()) {
    if (e.name == "cast" || e.name.starts_with("cast in ")) r.casts += e.calls;
    if (e.name == "cast_many" || e.name.starts_with("cast_many in ")) r.batched_casts += e.calls;
  }
  r.tensors = {y, x.grad(), mem.grad()};
  for (const Tensor& p : layer.parameters()) {
    EXPECT_EQ(p.dtype(), DType::F32);
    r.tensors.push_back(p.grad());
  }
  return r;
}

// The layer with and without batched casts, in every feed-forward and layer checkpoint mode: bit
// for bit (tol 0), or within tol where the device's layer is not deterministic run to run.
void expect_batched_casts_match(Device device, double tol) {
  for (const std::string ffn : {"activation", "chunked"}) {
    for (bool ckpt : {false, true}) {
      const std::string what = "ffn_checkpoint " + ffn + (ckpt ? ", layer checkpoint" : "");
      const LayerRun single = run_layer(device, false, ffn, ckpt);
      const LayerRun batched = run_layer(device, true, ffn, ckpt);
      ASSERT_EQ(single.tensors.size(), batched.tensors.size());
      for (size_t i = 0; i < single.tensors.size(); ++i) {
        ASSERT_TRUE(single.tensors[i].defined() && batched.tensors[i].defined()) << what << ", tensor " << i;
        if (tol == 0.0) {
          EXPECT_EQ(exact(batched.tensors[i]), exact(single.tensors[i])) << what << ", tensor " << i;
        } else {
          EXPECT_TRUE(testing::all_close(batched.tensors[i].to(Device::cpu()).to(DType::F64),
                                         single.tensors[i].to(Device::cpu()).to(DType::F64), tol, tol))
              << what << ", tensor " << i;
        }
      }
      EXPECT_EQ(single.batched_casts, 0) << what;
      // A forward (two with the layer's checkpoint) and its backward, one call each.
      EXPECT_EQ(batched.batched_casts, ckpt ? 3 : 2) << what;
      // At least the ten projections' weights and biases no longer cast one by one, forward and
      // backward (other casts, of activations, remain).
      EXPECT_GE(single.casts - batched.casts, 2 * 20) << what;
    }
  }
}

TEST(ParamCastScope, TransformerLayerBatchedCastsAreBitIdentical) { expect_batched_casts_match(Device::cpu(), 0.0); }

// Bit-identical results need a deterministic layer: where the GPU's attention backward is not
// (atomic accumulation), two per-parameter runs already differ, and bf16's rounding bounds both.
TEST(ParamCastScope, TransformerLayerBatchedCastsMatchOnTheGpu) {
  LN_REQUIRE_GPU();
  const LayerRun a = run_layer(Device::cuda(0), false, "activation", false);
  const LayerRun b = run_layer(Device::cuda(0), false, "activation", false);
  bool deterministic = true;
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    deterministic = deterministic && exact(a.tensors[i]) == exact(b.tensors[i]);
  }
  expect_batched_casts_match(Device::cuda(0), deterministic ? 0.0 : 2e-2);
}

}  // namespace
}  // namespace longnet
