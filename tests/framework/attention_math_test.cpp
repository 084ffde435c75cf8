// The materialised-score attention (the GPU's path for f32 and f64) against the flash kernels on
// the CPU, which the attention op tests hold to naive loops: out, lse, and the gradients of q, k,
// v and the block bias, for causal offsets, key padding, block layouts and strided batch views,
// with and without an lse gradient and with accumulation; chunked like long sequences.
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/attention_math.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

struct MathCase {
  Shape q, kv;  // (batch..., rows, H, D)
  bool causal = false;
  int64_t causal_offset = 0;
  bool padding = false;
  int64_t block = 0;  // layout block (0: none); with a layout, a block bias too
};

Tensor randn_f64(const Shape& s, Generator& g) { return randn(s, DType::F64, Device::cpu(), &g); }

// A layout with one group per batch element and head: the diagonal block, block 0 and one that
// depends on the head.
std::shared_ptr<const AttentionLayout> layout_for(const MathCase& c) {
  const int64_t n = c.q[c.q.size() - 3], nk = c.kv[c.kv.size() - 3], h = c.q[c.q.size() - 2];
  int64_t batch = 1;
  for (size_t i = 0; i + 3 < c.q.size(); ++i) batch *= c.q[i];
  const int64_t qb = (n + c.block - 1) / c.block, kb = (nk + c.block - 1) / c.block;
  std::vector<std::vector<int64_t>> rows;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t hh = 0; hh < h; ++hh) {
      for (int64_t i = 0; i < qb; ++i) rows.push_back({std::min(i, kb - 1), 0, (i + hh + b + 1) % kb});
    }
  }
  return std::make_shared<const AttentionLayout>(AttentionLayout::from_rows(c.block, batch, h, qb, kb, rows));
}

void expect_math_matches_kernel(const MathCase& c) {
  Generator g(17);
  const Tensor q = randn_f64(c.q, g), k = randn_f64(c.kv, g), v = randn_f64(c.kv, g);
  AttentionParams p;
  p.causal = c.causal;
  p.causal_offset = c.causal_offset;
  if (c.padding) {
    Shape ms(c.kv.begin(), c.kv.end() - 2);
    p.key_padding_mask = compare(rand(ms, DType::F64, Device::cpu(), &g), 0.7, CompareOp::Gt);
  }
  if (c.block) {
    p.layout = layout_for(c);
    p.block_bias = randn_f64({p.layout->entries()}, g);
  }
  const AttentionOutput want = attention_forward(q, k, v, p);
  AttentionOutput got{zeros(want.out.shape(), DType::F64, Device::cpu()),
                      zeros(want.lse.shape(), DType::F64, Device::cpu())};
  // Chunks of a few query rows, as long sequences are cut.
  const int64_t chunk = 5 * c.kv[c.kv.size() - 3] * c.q[c.q.size() - 2];
  detail::math_attention_forward(q, k, v, p, got.out, got.lse, chunk);
  EXPECT_TRUE(testing::all_close(got.out, want.out, 1e-10, 1e-9));
  EXPECT_TRUE(testing::all_close(got.lse, want.lse, 1e-10, 1e-9));
  const Tensor dout = randn_f64(want.out.shape(), g), dlse = randn_f64(want.lse.shape(), g);
  for (const Tensor& dl : {dlse, Tensor()}) {
    for (bool accumulate : {false, true}) {
      const auto fresh = [&] {
        return AttentionGrads{full(q.shape(), 0.25, DType::F64, Device::cpu()),
                              full(k.shape(), -0.5, DType::F64, Device::cpu()),
                              full(v.shape(), 1.0, DType::F64, Device::cpu()),
                              c.block ? zeros({p.layout->entries()}, DType::F64, Device::cpu()) : Tensor()};
      };
      const AttentionGrads a = fresh(), b = fresh();
      attention_backward_into(q, k, v, want.out, want.lse, dout, dl, p, a, accumulate);
      detail::math_attention_backward(q, k, v, want.out, want.lse, dout, dl, p, b, accumulate, chunk);
      EXPECT_TRUE(testing::all_close(b.dq, a.dq, 1e-9, 1e-8)) << "dq";
      EXPECT_TRUE(testing::all_close(b.dk, a.dk, 1e-9, 1e-8)) << "dk";
      EXPECT_TRUE(testing::all_close(b.dv, a.dv, 1e-9, 1e-8)) << "dv";
      if (c.block) EXPECT_TRUE(testing::all_close(b.dblock_bias, a.dblock_bias, 1e-9, 1e-8)) << "dblock_bias";
    }
  }
}

TEST(AttentionMath, PlainAndCausalMatchTheKernel) {
  expect_math_matches_kernel({{2, 37, 3, 8}, {2, 37, 3, 8}, false});
  expect_math_matches_kernel({{2, 37, 3, 8}, {2, 37, 3, 8}, true});
  // Nk > N with the offset aligning the last rows, and a negative offset (early rows see nothing).
  expect_math_matches_kernel({{2, 20, 2, 8}, {2, 45, 2, 8}, true, 25});
  expect_math_matches_kernel({{2, 30, 2, 8}, {2, 20, 2, 8}, true, -10});
}

TEST(AttentionMath, PaddingLayoutsAndBatchDimsMatchTheKernel) {
  expect_math_matches_kernel({{2, 33, 2, 8}, {2, 33, 2, 8}, true, 0, true});
  expect_math_matches_kernel({{2, 50, 2, 8}, {2, 50, 2, 8}, false, 0, false, 8});
  expect_math_matches_kernel({{3, 2, 41, 2, 8}, {3, 2, 41, 2, 8}, true, 0, true, 16});
  expect_math_matches_kernel({{41, 2, 8}, {41, 2, 8}, true});
}

}  // namespace
}  // namespace longnet
