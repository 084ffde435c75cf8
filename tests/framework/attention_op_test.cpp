// The flash attention op and the LSE merge: forward against naive loops, gradients against central
// differences and against a materialised softmax reference, masks, layouts, merges, errors.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/attention.h"
#include "framework/ops/ops.h"
#include "tests/support/attention_reference.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::KeyCountFn;
using testing::leaf;

constexpr double kInf = std::numeric_limits<double>::infinity();

// A (B, Nk) bool padding mask with the last `pad[b]` keys of batch element b padded.
Tensor padding_mask(int64_t nk, const std::vector<int64_t>& pad) {
  std::vector<bool> m;
  for (int64_t p : pad) {
    for (int64_t j = 0; j < nk; ++j) m.push_back(j >= nk - p);
  }
  std::vector<uint8_t> bytes(m.begin(), m.end());
  return cast(from_vector(bytes, {static_cast<int64_t>(pad.size()), nk}), DType::Bool);
}

KeyCountFn unpadded(int64_t nk, const std::vector<int64_t>& pad) {
  return [nk, pad](int64_t b, int64_t, int64_t, int64_t j) { return j < nk - pad[static_cast<size_t>(b)] ? 1.0 : 0.0; };
}

Tensor vec_tensor(const std::vector<double>& v, const Shape& s) { return from_vector(v, s); }

struct Case {
  int64_t B, N, Nk, H, D;
  bool causal;
  std::vector<int64_t> pad;  // padded keys per batch element (empty: no mask)
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "B" << c.B << " N" << c.N << " Nk" << c.Nk << " H" << c.H << " D" << c.D << (c.causal ? " causal" : "")
      << (c.pad.empty() ? "" : " padded");
}

AttentionParams params_of(const Case& c) {
  AttentionParams p;
  p.causal = c.causal;
  p.causal_offset = c.Nk - c.N;
  if (!c.pad.empty()) p.key_padding_mask = padding_mask(c.Nk, c.pad);
  return p;
}

KeyCountFn keys_of(const Case& c) {
  KeyCountFn f = c.causal ? testing::causal_keys(c.Nk - c.N) : testing::all_keys();
  return c.pad.empty() ? f : testing::both(f, unpadded(c.Nk, c.pad));
}

class AttentionCases : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionCases, ForwardMatchesNaiveLoops) {
  const Case c = GetParam();
  const Tensor q = leaf({c.B, c.N, c.H, c.D}, 1), k = leaf({c.B, c.Nk, c.H, c.D}, 2), v = leaf({c.B, c.Nk, c.H, c.D}, 3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  const auto ref = testing::naive_attention(q, k, v, keys_of(c), scale);
  const AttentionOutput r = attention(q, k, v, params_of(c));
  EXPECT_TRUE(all_close(r.out, vec_tensor(ref.out, q.shape()), 1e-12, 1e-10));
  EXPECT_TRUE(all_close(r.lse, vec_tensor(ref.lse, {c.B, c.H, c.N}), 1e-12, 1e-10));
}

TEST_P(AttentionCases, GradientsMatchMaterialisedReference) {
  const Case c = GetParam();
  const Tensor q = leaf({c.B, c.N, c.H, c.D}, 4), k = leaf({c.B, c.Nk, c.H, c.D}, 5), v = leaf({c.B, c.Nk, c.H, c.D}, 6);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
  Generator g(7);
  const Tensor wo = randn(q.shape(), DType::F64, Device::cpu(), &g), wl = randn({c.B, c.H, c.N}, DType::F64, Device::cpu(), &g);
  auto grads = [&](const AttentionOutput& r) {
    add(sum(mul(r.out, wo)), sum(mul(r.lse, wl))).backward();
    std::vector<Tensor> out{q.grad(), k.grad(), v.grad()};
    for (const Tensor& t : {q, k, v}) t.set_grad(Tensor());
    return out;
  };
  const auto got = grads(attention(q, k, v, params_of(c)));
  const auto want = grads(testing::reference_attention(q, k, v, keys_of(c), scale));
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(all_close(got[i], want[i], 1e-10, 1e-8)) << "input " << i;
}

// Tiles are 64 rows: 70 and 75 rows cross a tile edge; the padding never hides a causal row's
// only keys, so every lse is finite.
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionCases,
    ::testing::Values(Case{2, 70, 70, 3, 32, false, {}}, Case{2, 70, 70, 3, 32, true, {}},
                      Case{1, 70, 75, 2, 64, false, {}}, Case{1, 75, 75, 2, 64, true, {}},
                      Case{2, 33, 33, 1, 128, true, {}}, Case{2, 66, 66, 2, 128, false, {}},
                      Case{2, 70, 70, 2, 32, false, {0, 9}}, Case{2, 70, 70, 2, 32, true, {3, 66}},
                      Case{2, 5, 130, 2, 32, true, {4, 0}}, Case{1, 130, 7, 2, 32, false, {}}));

// sum over out and lse of the op, as one tensor for gradcheck.
Tensor out_and_lse(const AttentionOutput& r) { return cat({flatten(r.out), flatten(r.lse)}); }

TEST(AttentionOp, GradcheckSmall) {
  for (bool causal : {false, true}) {
    AttentionParams p;
    p.causal = causal;
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return out_and_lse(attention(x[0], x[1], x[2], p)); },
                          {leaf({2, 5, 2, 3}, 1), leaf({2, 5, 2, 3}, 2), leaf({2, 5, 2, 3}, 3)}))
        << "causal " << causal;
  }
}

TEST(AttentionOp, GradcheckAcrossTilesWithPaddingAndOffset) {
  AttentionParams p;
  p.causal = true;
  p.causal_offset = 3;
  p.key_padding_mask = padding_mask(70, {5});
  p.scale = 0.7;
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return out_and_lse(attention(x[0], x[1], x[2], p)); },
                        {leaf({1, 67, 1, 2}, 4), leaf({1, 70, 1, 2}, 5), leaf({1, 70, 1, 2}, 6)}));
}

TEST(AttentionOp, GradcheckNonContiguousInputs) {
  // Leaves are (B, H, N, D) and (B, D, Nk, H): the op sees transposed views.
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& x) {
        AttentionParams p;
        p.causal = true;
        return out_and_lse(attention(transpose(x[0], 1, 2), permute(x[1], {0, 2, 3, 1}), x[2].slice(1, 0, 12, 2)));
      },
      {leaf({2, 2, 6, 3}, 7), leaf({2, 3, 6, 2}, 8), leaf({2, 12, 2, 3}, 9)}));
}

TEST(AttentionOp, GradcheckBroadcastKeys) {
  // One key head expanded over three query heads (grouped-query style), and one value row
  // expanded over all keys (overlapping rows, which the op copies before the kernels read them).
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& x) {
        return out_and_lse(attention(x[0], expand(x[1], {2, 4, 3, 2}), expand(x[2], {2, 4, 3, 2})));
      },
      {leaf({2, 5, 3, 2}, 10), leaf({2, 4, 1, 2}, 11), leaf({2, 1, 3, 2}, 12)}));
}

TEST(AttentionOp, BatchDimsFromNoneToTwo) {
  const Tensor q = leaf({2, 3, 9, 2, 4}, 1), k = leaf({2, 3, 11, 2, 4}, 2), v = leaf({2, 3, 11, 2, 4}, 3);
  const AttentionOutput r = attention(q, k, v);
  const AttentionOutput flat = attention(reshape(q, {6, 9, 2, 4}), reshape(k, {6, 11, 2, 4}), reshape(v, {6, 11, 2, 4}));
  EXPECT_TRUE(all_close(reshape(r.out, {6, 9, 2, 4}), flat.out, 1e-14, 0));
  EXPECT_TRUE(all_close(reshape(r.lse, {6, 2, 9}), flat.lse, 1e-14, 0));
  auto first = [](const Tensor& t) { return t.narrow(0, 0, 1).squeeze(0).narrow(0, 0, 1).squeeze(0); };
  const AttentionOutput single = attention(first(q), first(k), first(v));
  EXPECT_TRUE(all_close(single.out, flat.out.narrow(0, 0, 1).squeeze(0), 1e-14, 0));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return out_and_lse(attention(x[0], x[1], x[2])); },
                        {leaf({4, 1, 3}, 4), leaf({5, 1, 3}, 5), leaf({5, 1, 3}, 6)}));
}

TEST(AttentionOp, RowsWithoutKeysGiveZeroAndMinusInf) {
  const Tensor q = leaf({2, 4, 1, 3}, 1), k = leaf({2, 6, 1, 3}, 2), v = leaf({2, 6, 1, 3}, 3);
  AttentionParams p;
  p.causal = true;
  p.causal_offset = -2;                          // queries 0 and 1 see no key
  p.key_padding_mask = padding_mask(6, {0, 6});  // batch 1 sees nothing at all
  const AttentionOutput r = attention(q, k, v, p);
  const auto lse = r.lse.to_vector<double>(), out = r.out.to_vector<double>();
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(lse[static_cast<size_t>(i)] == -kInf, i < 2) << i;
    EXPECT_EQ(lse[static_cast<size_t>(4 + i)], -kInf);
  }
  for (size_t x = 0; x < 6; ++x) EXPECT_EQ(out[x], 0.0);
  for (size_t x = 12; x < 24; ++x) EXPECT_EQ(out[x], 0.0);
  sum(r.out).backward();
  for (const Tensor& t : {q, k, v}) {
    for (double g : t.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(g));
  }
  for (size_t x = 12; x < 24; ++x) EXPECT_EQ(q.grad().to_vector<double>()[x], 0.0);
}

// A layout over 3 query blocks x 4 key blocks of 4 rows (N = 11, Nk = 14), per head.
std::shared_ptr<const AttentionLayout> small_layout(int64_t batch) {
  std::vector<std::vector<int64_t>> rows;
  for (int64_t b = 0; b < batch; ++b) {
    rows.insert(rows.end(), {{0}, {0, 1, 3}, {2}, {1, 2}, {}, {0, 3}});
  }
  return std::make_shared<const AttentionLayout>(AttentionLayout::from_rows(4, batch, 2, 3, 4, rows));
}

TEST(AttentionOp, LayoutMatchesMaskedReference) {
  for (bool causal : {false, true}) {
    const Tensor q = leaf({2, 11, 2, 8}, 1), k = leaf({2, 14, 2, 8}, 2), v = leaf({2, 14, 2, 8}, 3);
    AttentionParams p;
    p.layout = small_layout(1);
    p.causal = causal;
    p.causal_offset = 3;
    const KeyCountFn keys = causal ? testing::both(testing::layout_keys(*p.layout), testing::causal_keys(3))
                                   : testing::layout_keys(*p.layout);
    const auto ref = testing::naive_attention(q, k, v, keys, 1.0 / std::sqrt(8.0));
    const AttentionOutput r = attention(q, k, v, p);
    EXPECT_TRUE(all_close(r.out, vec_tensor(ref.out, q.shape()), 1e-12, 1e-10)) << "causal " << causal;
    EXPECT_TRUE(all_close(r.lse, vec_tensor(ref.lse, {2, 2, 11}), 1e-12, 1e-10)) << "causal " << causal;
  }
}

TEST(AttentionOp, GradcheckLayoutWithBlockBias) {
  const auto layout = small_layout(2);
  AttentionParams p;
  p.layout = layout;
  p.causal = true;
  p.causal_offset = 3;
  // The output over rows that see some key (query block 1 of head 1 sees none).
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& x) {
        AttentionParams pb = p;
        pb.block_bias = x[3];
        const AttentionOutput r = attention(x[0], x[1], x[2], pb);
        return cat({flatten(r.out), flatten(r.lse.narrow(1, 0, 1))});
      },
      {leaf({2, 11, 2, 3}, 4), leaf({2, 14, 2, 3}, 5), leaf({2, 14, 2, 3}, 6), leaf({layout->entries()}, 7)}));
}

TEST(AttentionOp, MergedHalvesEqualOneAttentionWithExactGradients) {
  // Keys split in two overlapping-free halves, each attended separately, merged by LSE: outputs,
  // lse and every gradient equal one attention over all keys (the merge weights are not detached).
  const Tensor q = leaf({2, 9, 2, 4}, 1), k = leaf({2, 13, 2, 4}, 2), v = leaf({2, 13, 2, 4}, 3);
  Generator g(3);
  const Tensor wo = randn(q.shape(), DType::F64, Device::cpu(), &g), wl = randn({2, 2, 9}, DType::F64, Device::cpu(), &g);
  auto grads = [&](const AttentionOutput& r) {
    add(sum(mul(r.out, wo)), sum(mul(r.lse, wl))).backward();
    std::vector<Tensor> out{q.grad(), k.grad(), v.grad()};
    for (const Tensor& t : {q, k, v}) t.set_grad(Tensor());
    return out;
  };
  AttentionParams causal;
  causal.causal = true;
  causal.causal_offset = 4;
  const AttentionOutput full = attention(q, k, v, causal);
  const auto want = grads(full);
  AttentionParams second = causal;
  second.causal_offset = causal.causal_offset - 6;  // keys 6.. are rows 0.. of the second half
  const AttentionOutput merged = merge_attention({attention(q, k.narrow(1, 0, 6), v.narrow(1, 0, 6), causal),
                                                  attention(q, k.narrow(1, 6, 7), v.narrow(1, 6, 7), second)});
  EXPECT_TRUE(all_close(merged.out, full.out, 1e-12, 1e-10));
  EXPECT_TRUE(all_close(merged.lse, full.lse, 1e-12, 1e-10));
  const auto got = grads(merged);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(all_close(got[i], want[i], 1e-12, 1e-10)) << "input " << i;
}

TEST(AttentionOp, RawBackwardWithFinalOutputAndLseSumsToFullGradient) {
  const Tensor q = leaf({1, 7, 2, 4}, 4), k = leaf({1, 10, 2, 4}, 5), v = leaf({1, 10, 2, 4}, 6);
  const AttentionOutput full = attention_forward(q, k, v, {});
  Generator g(5);
  const Tensor dout = randn(q.shape(), DType::F64, Device::cpu(), &g), dlse = randn({1, 2, 7}, DType::F64, Device::cpu(), &g);
  const AttentionGrads want = attention_backward(q, k, v, full.out, full.lse, dout, dlse, {});
  const AttentionGrads a = attention_backward(q, k.narrow(1, 0, 4), v.narrow(1, 0, 4), full.out, full.lse, dout, dlse, {});
  const AttentionGrads b = attention_backward(q, k.narrow(1, 4, 6), v.narrow(1, 4, 6), full.out, full.lse, dout, dlse, {});
  NoGradGuard ng;
  EXPECT_TRUE(all_close(add(a.dq, b.dq), want.dq, 1e-12, 1e-10));
  EXPECT_TRUE(all_close(cat({a.dk, b.dk}, 1), want.dk, 1e-12, 1e-10));
  EXPECT_TRUE(all_close(cat({a.dv, b.dv}, 1), want.dv, 1e-12, 1e-10));
  // The same through the *_into entry point, accumulating into strided views of one buffer.
  const Tensor dq = zeros(q.shape(), DType::F64), dk = zeros(k.shape(), DType::F64), dv = zeros(v.shape(), DType::F64);
  for (auto [start, len] : {std::pair<int64_t, int64_t>{0, 4}, {4, 6}}) {
    attention_backward_into(q.detach(), k.detach().narrow(1, start, len), v.detach().narrow(1, start, len), full.out,
                            full.lse, dout, dlse, {}, {dq, dk.narrow(1, start, len), dv.narrow(1, start, len), Tensor()},
                            true);
  }
  EXPECT_TRUE(all_close(dq, want.dq, 1e-12, 1e-10));
  EXPECT_TRUE(all_close(dk, want.dk, 1e-12, 1e-10));
  EXPECT_TRUE(all_close(dv, want.dv, 1e-12, 1e-10));
}

TEST(MergeAttention, ForwardMatchesNaiveLoops) {
  const Tensor o1 = leaf({2, 3, 2, 4}, 1), o2 = leaf({2, 3, 2, 4}, 2), l1 = leaf({2, 2, 3}, 3), l2 = leaf({2, 2, 3}, 4);
  NoGradGuard ng;
  const Tensor l2m = where(compare(l2, 1.0, CompareOp::Gt), full_like(l2, -kInf), l2);  // some parts empty
  const AttentionOutput r = merge_attention({{o1, l1}, {o2, l2m}});
  const auto a = o1.to_vector<double>(), b = o2.to_vector<double>(), la = l1.to_vector<double>(),
             lb = l2m.to_vector<double>();
  std::vector<double> out(a.size()), lse(la.size());
  for (int64_t bb = 0; bb < 2; ++bb) {
    for (int64_t n = 0; n < 3; ++n) {
      for (int64_t h = 0; h < 2; ++h) {
        const auto s = static_cast<size_t>((bb * 2 + h) * 3 + n);
        const double L = std::log(std::exp(la[s]) + std::exp(lb[s]));
        lse[s] = L;
        for (int64_t d = 0; d < 4; ++d) {
          const auto x = static_cast<size_t>(((bb * 3 + n) * 2 + h) * 4 + d);
          out[x] = std::exp(la[s] - L) * a[x] + std::exp(lb[s] - L) * b[x];
        }
      }
    }
  }
  EXPECT_TRUE(all_close(r.out, vec_tensor(out, o1.shape()), 1e-12, 1e-12));
  EXPECT_TRUE(all_close(r.lse, vec_tensor(lse, l1.shape()), 1e-12, 1e-12));
}

TEST(MergeAttention, GradcheckThroughWeights) {
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& x) {
        return out_and_lse(merge_attention({{x[0], x[1]}, {x[2], transpose(x[3], 1, 2)}, {x[4], x[5]}}));
      },
      {leaf({2, 3, 2, 4}, 1), leaf({2, 2, 3}, 2), leaf({2, 3, 2, 4}, 3), leaf({2, 3, 2}, 4), leaf({2, 3, 2, 4}, 5),
       leaf({2, 2, 3}, 6)}));
}

TEST(MergeAttention, AllMinusInfRowsGiveZeroWithZeroGradients) {
  const Tensor o1 = leaf({1, 2, 1, 3}, 1), o2 = leaf({1, 2, 1, 3}, 2);
  const Tensor l1 = from_vector(std::vector<double>{-kInf, 0.5}, {1, 1, 2}).requires_grad_(true);
  const Tensor l2 = from_vector(std::vector<double>{-kInf, -kInf}, {1, 1, 2}).requires_grad_(true);
  const AttentionOutput r = merge_attention({{o1, l1}, {o2, l2}});
  const auto out = r.out.to_vector<double>(), lse = r.lse.to_vector<double>(), a = o1.to_vector<double>();
  EXPECT_EQ(lse[0], -kInf);
  EXPECT_DOUBLE_EQ(lse[1], 0.5);
  for (size_t d = 0; d < 3; ++d) {
    EXPECT_EQ(out[d], 0.0);
    EXPECT_DOUBLE_EQ(out[3 + d], a[3 + d]);
  }
  sum(add(sum(r.out), sum(mul(r.lse, 0.0)))).backward();
  for (const Tensor& t : {o1, o2, l1, l2}) {
    for (double g : t.grad().to_vector<double>()) EXPECT_TRUE(std::isfinite(g));
  }
  EXPECT_EQ(o2.grad().to_vector<double>(), std::vector<double>(6, 0.0));
}

TEST(AttentionOp, Float32AndBFloat16Forward) {
  const Tensor q = leaf({2, 70, 2, 32}, 1), k = leaf({2, 70, 2, 32}, 2), v = leaf({2, 70, 2, 32}, 3);
  AttentionParams p;
  p.causal = true;
  const AttentionOutput ref = attention_forward(q, k, v, p);
  const AttentionOutput f32 = attention_forward(cast(q, DType::F32), cast(k, DType::F32), cast(v, DType::F32), p);
  EXPECT_EQ(f32.out.dtype(), DType::F32);
  EXPECT_EQ(f32.lse.dtype(), DType::F32);
  EXPECT_TRUE(all_close(f32.out, cast(ref.out, DType::F32), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(f32.lse, cast(ref.lse, DType::F32), 1e-5, 1e-5));
  const AttentionOutput bf = attention(cast(q, DType::BF16), cast(k, DType::BF16), cast(v, DType::BF16), p);
  EXPECT_EQ(bf.out.dtype(), DType::BF16);
  EXPECT_EQ(bf.lse.dtype(), DType::F32);
  EXPECT_TRUE(all_close(cast(bf.out, DType::F64), ref.out, 3e-2, 3e-2));
  EXPECT_TRUE(all_close(cast(bf.lse, DType::F64), ref.lse, 3e-2, 1e-2));
}

TEST(AttentionOp, ErrorsNameTheOpAndShapes) {
  const Tensor q = leaf({2, 5, 2, 4}, 1), k = leaf({2, 6, 2, 4}, 2);
  auto msg = testing::error_message([&] { attention(q, k, leaf({2, 6, 2, 3}, 3)); });
  EXPECT_NE(msg.find("[attention]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 6, 2, 3)"), std::string::npos) << msg;
  msg = testing::error_message([&] { attention(q, leaf({2, 6, 3, 4}, 3), leaf({2, 6, 3, 4}, 3)); });
  EXPECT_NE(msg.find("(2, 5, 2, 4)"), std::string::npos) << msg;
  msg = testing::error_message([&] { attention(q, cast(k, DType::F32), cast(k, DType::F32)); });
  EXPECT_NE(msg.find("dtype mismatch"), std::string::npos) << msg;
  msg = testing::error_message([&] { attention(leaf({5, 4}, 1), k, k); });
  EXPECT_NE(msg.find("(5, 4)"), std::string::npos) << msg;
  AttentionParams p;
  p.key_padding_mask = padding_mask(5, {0, 0});
  msg = testing::error_message([&] { attention(q, k, k, p); });
  EXPECT_NE(msg.find("key padding mask (2, 5)"), std::string::npos) << msg;
  p = {};
  p.layout = small_layout(1);
  msg = testing::error_message([&] { attention(q, k, k, p); });
  EXPECT_NE(msg.find("does not fit 5 queries and 6 keys"), std::string::npos) << msg;
  const Tensor kd = k.detach();
  msg = testing::error_message([&] {
    attention_forward_into(q.detach(), kd, kd, {}, expand(zeros({2, 1, 2, 4}, DType::F64), {2, 5, 2, 4}),
                           zeros({2, 2, 5}, DType::F64));
  });
  EXPECT_NE(msg.find("out (2, 5, 2, 4) has row stride 0"), std::string::npos) << msg;
  msg = testing::error_message([&] { merge_attention({{q, leaf({2, 2, 5}, 1)}, {q, leaf({2, 5, 2}, 1)}}); });
  EXPECT_NE(msg.find("[merge_attention]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(2, 5, 2)"), std::string::npos) << msg;
}

}  // namespace
}  // namespace longnet
