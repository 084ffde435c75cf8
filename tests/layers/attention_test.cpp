// The attention cores against dense attention with the equivalent mask built explicitly (outputs,
// lse and gradients of q, k, v), LongNet's Eq. 10 for dilated schedules, block patterns, the
// adaptive core's straight-through scorer, and causality for every core.
#include <cmath>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "layers/attention/adaptive.h"
#include "layers/attention/block_layouts.h"
#include "layers/attention/block_sparse.h"
#include "layers/attention/core.h"
#include "tests/layers/block_patterns.h"
#include "layers/attention/dilated.h"
#include "tests/support/attention_reference.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::KeyCountFn;
using testing::leaf;

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Shape4 {
  int64_t B, N, H, D;
};

// A (B, N) bool mask padding the last pad[b] keys of batch element b.
Tensor padding_mask(int64_t n, const std::vector<int64_t>& pad) {
  std::vector<uint8_t> m;
  for (int64_t p : pad) {
    for (int64_t j = 0; j < n; ++j) m.push_back(j >= n - p);
  }
  return cast(from_vector(m, {static_cast<int64_t>(pad.size()), n}), DType::Bool);
}

KeyCountFn unpadded(int64_t n, const std::vector<int64_t>& pad) {
  return [n, pad](int64_t b, int64_t, int64_t, int64_t j) { return j < n - pad[static_cast<size_t>(b)] ? 1.0 : 0.0; };
}

// lse with -inf rows (no visible key) replaced by 0, so a weighted sum stays finite.
Tensor finite_lse(const Tensor& lse) { return where(compare(lse, -kInf, CompareOp::Gt), lse, zeros_like(lse)); }

// Gradients of q, k, v (and of `extra` leaves) of sum(out * wo) + sum(lse * wl) for a fixed draw
// of wo, wl; clears them afterwards.
std::vector<Tensor> gradients(const Tensor& out, const Tensor& lse, std::vector<Tensor> leaves) {
  Generator g(99);
  const Tensor wo = randn(out.shape(), out.dtype(), Device::cpu(), &g);
  const Tensor wl = randn(lse.shape(), lse.dtype(), Device::cpu(), &g);
  add(sum(mul(out, wo)), sum(mul(finite_lse(lse), wl))).backward();
  std::vector<Tensor> grads;
  for (const Tensor& t : leaves) {
    grads.push_back(t.grad().defined() ? t.grad() : zeros_like(t));
    t.set_grad(Tensor());
  }
  return grads;
}

// Checks a core against the dense reference whose key multiplicities are `keys`: out and lse
// against naive loops, gradients of q, k, v against the materialised reference's autograd.
void expect_core_matches(AttentionCore& core, const Shape4& s, const AttentionOptions& opt, const KeyCountFn& keys,
                         uint64_t seed = 1) {
  const Tensor q = leaf({s.B, s.N, s.H, s.D}, seed), k = leaf({s.B, s.N, s.H, s.D}, seed + 1),
               v = leaf({s.B, s.N, s.H, s.D}, seed + 2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  const AttentionResult r = core.forward(q, k, v, opt);
  const auto naive = testing::naive_attention(q, k, v, keys, scale);
  EXPECT_TRUE(all_close(r.out, from_vector(naive.out, q.shape()), 1e-12, 1e-10)) << core.name();
  EXPECT_TRUE(all_close(r.lse, from_vector(naive.lse, {s.B, s.H, s.N}), 1e-12, 1e-10)) << core.name();
  const auto got = gradients(r.out, r.lse, {q, k, v});
  const AttentionOutput ref = testing::reference_attention(q, k, v, keys, scale);
  const auto want = gradients(ref.out, ref.lse, {q, k, v});
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(all_close(got[i], want[i], 1e-10, 1e-8)) << core.name() << " input " << i;
}

AttentionOptions options(bool causal, const Tensor& mask = Tensor()) {
  AttentionOptions o;
  o.causal = causal;
  o.key_padding_mask = mask;
  return o;
}

KeyCountFn with_causal(const KeyCountFn& f, bool causal) {
  return causal ? testing::both(f, testing::causal_keys()) : f;
}

// ---------------------------------------------------------------------------------------------
// Registry and dense.

TEST(AttentionRegistry, BuildsEveryCoreByName) {
  for (const std::string name : {"dense", "dilated", "block_sparse", "adaptive"}) {
    AttentionConfig c;
    c.head_dim = 4;
    EXPECT_EQ(make_attention_core(name, c)->name(), name);
  }
  try {
    make_attention_core("nope");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unknown core 'nope'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("block_sparse"), std::string::npos) << msg;
  }
}

TEST(AttentionRegistry, AcceptsNewCores) {
  register_attention_core("dense_alias", [](const AttentionConfig& c) { return make_attention_core("dense", c); });
  EXPECT_EQ(make_attention_core("dense_alias")->name(), "dense");
  const auto names = attention_core_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "dense_alias"), names.end());
}

TEST(DenseCore, MatchesReference) {
  auto core = make_attention_core("dense");
  for (bool causal : {false, true}) {
    expect_core_matches(*core, {2, 70, 2, 32}, options(causal), with_causal(testing::all_keys(), causal));
    expect_core_matches(*core, {2, 21, 3, 64}, options(causal, padding_mask(21, {0, 6})),
                        with_causal(unpadded(21, {0, 6}), causal));
  }
  expect_core_matches(*core, {1, 9, 2, 128}, options(true), testing::causal_keys());
}

TEST(DenseCore, DecodingQueriesAreTheLastPositions) {
  auto core = make_attention_core("dense");
  const Tensor q = leaf({1, 3, 2, 8}, 1), k = leaf({1, 10, 2, 8}, 2), v = leaf({1, 10, 2, 8}, 3);
  const AttentionResult r = core->forward(q, k, v, options(true));
  const auto naive = testing::naive_attention(q, k, v, testing::causal_keys(7), 1.0 / std::sqrt(8.0));
  EXPECT_TRUE(all_close(r.out, from_vector(naive.out, q.shape()), 1e-12, 1e-10));
}

// ---------------------------------------------------------------------------------------------
// Dilated.

struct Schedule {
  std::vector<int64_t> w, r;
};

// LongNet's Eq. 10 as one softmax: key j counts once for every branch in which it shares a
// segment with query i and both are among the rows that head h keeps (offset h mod r).
KeyCountFn dilated_keys(int64_t n, const Schedule& s, bool causal) {
  return [n, s, causal](int64_t, int64_t h, int64_t i, int64_t j) {
    if (causal && j > i) return 0.0;
    double count = 0.0;
    for (size_t x = 0; x < s.w.size(); ++x) {
      const int64_t w = std::min(s.w[x], n), r = s.r[x], offset = h % r;
      if (i / w == j / w && i % w % r == offset && j % w % r == offset) count += 1.0;
    }
    return count;
  };
}

std::unique_ptr<AttentionCore> dilated_core(const Schedule& s) {
  AttentionConfig c;
  c.segment_lengths = s.w;
  c.dilation_rates = s.r;
  return make_attention_core("dilated", c);
}

TEST(DilatedCore, WholeSequenceSegmentWithoutDilationIsDense) {
  for (bool causal : {false, true}) {
    auto core = dilated_core({{40}, {1}});
    expect_core_matches(*core, {2, 40, 2, 32}, options(causal), with_causal(testing::all_keys(), causal));
    // A segment longer than the sequence clamps to it.
    auto longer = dilated_core({{4096}, {1}});
    expect_core_matches(*longer, {1, 70, 2, 64}, options(causal, padding_mask(70, {5})),
                        with_causal(unpadded(70, {5}), causal));
  }
}

TEST(DilatedCore, TwoBranchesEqualOneSoftmaxOverTheUnionWithDuplicates) {
  // N = 24 and 23 (not a multiple of 16 or of 8), three heads so the r = 2 branch has both offsets.
  const Schedule s{{8, 16}, {1, 2}};
  auto core = dilated_core(s);
  for (bool causal : {false, true}) {
    for (int64_t n : {24, 23}) {
      expect_core_matches(*core, {2, n, 3, 32}, options(causal), dilated_keys(n, s, causal));
    }
  }
}

TEST(DilatedCore, ManyBranchesRatesAboveHeadsAndPadding) {
  const Schedule s{{4, 6, 16, 32}, {1, 2, 3, 5}};
  auto core = dilated_core(s);
  for (bool causal : {false, true}) {
    const std::vector<int64_t> pad{2, 7};
    expect_core_matches(*core, {2, 29, 4, causal ? 128 : 64}, options(causal, padding_mask(29, pad)),
                        testing::both(dilated_keys(29, s, causal), unpadded(29, pad)));
  }
}

TEST(DilatedCore, PaperScheduleOnAShortSequence) {
  // Every segment clamps to N = 37; twelve heads cover every offset of r = 12.
  const Schedule s{{2048, 4096, 8192, 16384, 32768}, {1, 2, 4, 6, 12}};
  auto core = make_attention_core("dilated");
  expect_core_matches(*core, {1, 37, 12, 32}, options(true), dilated_keys(37, s, true));
}

TEST(DilatedCore, Gradcheck) {
  auto core = dilated_core({{4, 7}, {1, 2}});
  for (bool causal : {false, true}) {
    EXPECT_TRUE(testing::gradcheck(
        [&](const std::vector<Tensor>& x) {
          const AttentionResult r = core->forward(x[0], x[1], x[2], options(causal));
          return cat({flatten(r.out), flatten(r.lse)});
        },
        {leaf({2, 7, 3, 2}, 1), leaf({2, 7, 3, 2}, 2), leaf({2, 7, 3, 2}, 3)}))
        << "causal " << causal;
  }
}

TEST(DilatedCore, NonContiguousInputsAndFloat32) {
  const Schedule s{{8, 16}, {1, 2}};
  auto core = dilated_core(s);
  const Tensor q = leaf({2, 3, 20, 16}, 1), k = leaf({2, 3, 20, 16}, 2), v = leaf({2, 3, 20, 16}, 3);
  const Tensor qt = transpose(q, 1, 2), kt = transpose(k, 1, 2), vt = transpose(v, 1, 2);  // (B, N, H, D) views
  const AttentionResult r = core->forward(qt, kt, vt, options(true));
  const auto naive = testing::naive_attention(qt, kt, vt, dilated_keys(20, s, true), 0.25);
  EXPECT_TRUE(all_close(r.out, from_vector(naive.out, qt.shape()), 1e-12, 1e-10));
  const AttentionResult f = core->forward(cast(qt, DType::F32), cast(kt, DType::F32), cast(vt, DType::F32), options(true));
  EXPECT_EQ(f.out.dtype(), DType::F32);
  EXPECT_TRUE(all_close(f.out, cast(r.out, DType::F32), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(f.lse, cast(r.lse, DType::F32), 1e-5, 1e-5));
}

// ---------------------------------------------------------------------------------------------
// Block-sparse.

BlockPattern pattern(const std::string& kind) { return testing::test_pattern(kind); }

std::unique_ptr<BlockSparseAttention> block_core(const BlockPattern& p, int64_t block) {
  AttentionConfig c;
  c.pattern = p;
  c.block_size = block;
  return std::make_unique<BlockSparseAttention>(c);
}

TEST(BlockSparseCore, EveryPatternMatchesItsExplicitMask) {
  const int64_t n = 45, block = 8;  // 6 blocks, the last one short
  for (const std::string kind : {"local", "dilated", "global_local", "random", "hierarchical"}) {
    for (bool causal : {false, true}) {
      auto core = block_core(pattern(kind), block);
      const KeyCountFn keys = with_causal(testing::layout_keys(*core->layout(n, 2, causal)), causal);
      expect_core_matches(*core, {2, n, 2, 32}, options(causal), keys);
      const std::vector<int64_t> pad{0, 4};
      expect_core_matches(*core, {2, n, 2, 32}, options(causal, padding_mask(n, pad)),
                          testing::both(keys, unpadded(n, pad)), 7);
    }
  }
}

TEST(BlockSparseCore, UserLayoutAndLargeHeadDim) {
  // Per head: head 0 sees blocks {0}, {0, 1}, {2}; head 1 sees {1}, {1}, {0, 2} (rows with no
  // key of their own block included).
  auto user = std::make_shared<const AttentionLayout>(
      AttentionLayout::from_rows(16, 1, 2, 3, 3, {{0}, {0, 1}, {2}, {1}, {1}, {0, 2}}));
  BlockPattern p;
  p.kind = "user";
  p.user_layout = user;
  auto core = block_core(p, 16);
  expect_core_matches(*core, {1, 40, 2, 128}, options(false), testing::layout_keys(*user));
  // f32 against f64.
  const Tensor q = leaf({1, 40, 2, 128}, 4), k = leaf({1, 40, 2, 128}, 5), v = leaf({1, 40, 2, 128}, 6);
  const AttentionResult r64 = core->forward(q, k, v, options(true));
  const AttentionResult r32 = core->forward(cast(q, DType::F32), cast(k, DType::F32), cast(v, DType::F32), options(true));
  EXPECT_TRUE(all_close(r32.out, cast(r64.out, DType::F32), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(r32.lse, cast(r64.lse, DType::F32), 1e-5, 1e-5));
}

TEST(BlockLayouts, PatternsListTheExpectedBlocks) {
  auto rows_of = [](const AttentionLayout& l, int64_t h, int64_t i) {
    const auto r = static_cast<size_t>(l.row(0, h, i));
    return std::vector<int64_t>(l.key_block_ids.begin() + l.row_offsets[r], l.key_block_ids.begin() + l.row_offsets[r + 1]);
  };
  const AttentionLayout local = make_block_layout(pattern("local"), 4, 24, 1, true);
  EXPECT_EQ(rows_of(local, 0, 0), (std::vector<int64_t>{0}));
  EXPECT_EQ(rows_of(local, 0, 3), (std::vector<int64_t>{2, 3}));
  const AttentionLayout dil = make_block_layout(pattern("dilated"), 4, 32, 1, false);
  EXPECT_EQ(rows_of(dil, 0, 3), (std::vector<int64_t>{1, 3, 5}));
  const AttentionLayout glob = make_block_layout(pattern("global_local"), 4, 32, 1, false);
  EXPECT_EQ(rows_of(glob, 0, 5), (std::vector<int64_t>{0, 4, 5, 6}));
  EXPECT_EQ(rows_of(glob, 0, 0).size(), 8u);
  const AttentionLayout hier = make_block_layout(pattern("hierarchical"), 4, 40, 1, true);
  EXPECT_EQ(rows_of(hier, 0, 7), (std::vector<int64_t>{0, 5, 6, 7}));
  // Random: the diagonal plus two distinct others, the same for the same seed, different per head.
  const AttentionLayout a = make_block_layout(pattern("random"), 4, 64, 3, false);
  const AttentionLayout b = make_block_layout(pattern("random"), 4, 64, 3, false);
  EXPECT_EQ(a.key_block_ids, b.key_block_ids);
  EXPECT_EQ(a.heads, 3);
  bool heads_differ = false;
  for (int64_t i = 0; i < 16; ++i) {
    const auto r0 = rows_of(a, 0, i);
    EXPECT_EQ(r0.size(), 3u);
    EXPECT_TRUE(std::find(r0.begin(), r0.end(), i) != r0.end());
    heads_differ = heads_differ || r0 != rows_of(a, 1, i);
  }
  EXPECT_TRUE(heads_differ);
  BlockPattern other = pattern("random");
  other.seed = 6;
  EXPECT_NE(make_block_layout(other, 4, 64, 3, false).key_block_ids, a.key_block_ids);
  try {
    make_block_layout(pattern("spiral"), 4, 64, 1, false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown pattern 'spiral'"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// Adaptive.

std::unique_ptr<AdaptiveAttention> adaptive_core(double sparsity, int64_t block, int64_t d, double reg = 0.0) {
  AttentionConfig c;
  c.block_size = block;
  c.sparsity = sparsity;
  c.head_dim = d;
  c.scorer_dim = 4;
  c.regularizer = reg;
  c.seed = 3;
  c.param_dtype = DType::F64;
  return std::make_unique<AdaptiveAttention>(c);
}

TEST(AdaptiveCore, MatchesDenseWithTheChosenBlockMask) {
  for (bool causal : {false, true}) {
    auto core = adaptive_core(0.5, 8, 32);
    const Shape4 s{2, 45, 2, 32};
    // The layout depends on the inputs: run once to learn it (same seed, same inputs below).
    const Tensor q = leaf({s.B, s.N, s.H, s.D}, 1), k = leaf({s.B, s.N, s.H, s.D}, 2), v = leaf({s.B, s.N, s.H, s.D}, 3);
    core->forward(q, k, v, options(causal));
    const auto layout = core->last_layout();
    ASSERT_TRUE(layout);
    EXPECT_EQ(layout->batch, 2);
    EXPECT_EQ(layout->heads, 2);
    for (int64_t r = 0; r < 2 * 2 * 6; ++r) {
      const int64_t i = r % 6, visible = causal ? i + 1 : 6;
      const auto begin = layout->key_block_ids.begin() + layout->row_offsets[static_cast<size_t>(r)];
      const auto end = layout->key_block_ids.begin() + layout->row_offsets[static_cast<size_t>(r) + 1];
      EXPECT_EQ(end - begin, std::min<int64_t>(3, visible)) << "row " << r;
      EXPECT_TRUE(std::find(begin, end, i) != end) << "diagonal missing in row " << r;
    }
    expect_core_matches(*core, s, options(causal), with_causal(testing::layout_keys(*layout), causal));
    EXPECT_EQ(core->last_layout()->key_block_ids, layout->key_block_ids);
  }
}

// Means over rows of x (B, N, H, D) as (B, H, blocks, D), by loops: block i pools rows
// [first(i), last(i)).
Tensor pooled_rows_loop(const Tensor& x, int64_t nb, const std::function<int64_t(int64_t)>& first,
                        const std::function<int64_t(int64_t)>& last) {
  const int64_t B = x.size(0), N = x.size(1), H = x.size(2), D = x.size(3);
  const auto xv = x.to_vector<double>();
  std::vector<double> m(static_cast<size_t>(B * H * nb * D), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t lo = first(i), hi = std::min(last(i), N);
      for (int64_t n = lo; n < hi; ++n) {
        for (int64_t h = 0; h < H; ++h) {
          for (int64_t d = 0; d < D; ++d) {
            m[static_cast<size_t>(((b * H + h) * nb + i) * D + d)] +=
                xv[static_cast<size_t>(((b * N + n) * H + h) * D + d)] / static_cast<double>(hi - lo);
          }
        }
      }
    }
  }
  return from_vector(m, {B, H, nb, D});
}

// Means of the row blocks of x.
Tensor block_means_loop(const Tensor& x, int64_t block) {
  const int64_t nb = (x.size(1) + block - 1) / block;
  return pooled_rows_loop(x, nb, [block](int64_t i) { return i * block; }, [block](int64_t i) { return (i + 1) * block; });
}

// The causal query pooling: the previous block and the block's first row.
Tensor causal_query_means_loop(const Tensor& x, int64_t block) {
  const int64_t nb = (x.size(1) + block - 1) / block;
  return pooled_rows_loop(
      x, nb, [block](int64_t i) { return std::max<int64_t>(0, (i - 1) * block); },
      [block](int64_t i) { return i * block + 1; });
}

TEST(AdaptiveCore, ScorerGradientIsTheStraightThroughBlockGradient) {
  // Reference: materialised attention whose scores get, on every chosen block, the zero-valued
  // bias log w - stop_grad(log w) with w = sigmoid(score) from the scorer written out here.
  for (bool causal : {false, true}) {
    auto core = adaptive_core(0.6, 4, 8);
    const int64_t B = 2, N = 18, H = 2, D = 8, nb = 5;
    const Tensor q = leaf({B, N, H, D}, 11), k = leaf({B, N, H, D}, 12), v = leaf({B, N, H, D}, 13);
    const auto params = core->parameters();
    const AttentionResult r = core->forward(q, k, v, options(causal));
    const auto got = gradients(r.out, r.lse, {q, k, v, params[0], params[1]});
    const AttentionLayout layout = *core->last_layout();

    const Tensor qp = causal ? causal_query_means_loop(q.detach(), 4) : block_means_loop(q.detach(), 4);
    const Tensor scores = mul(matmul(matmul(qp, params[0]),
                                     transpose(matmul(block_means_loop(k.detach(), 4), params[1]), 2, 3)),
                              0.5);
    const Tensor log_w = log(sigmoid(scores));
    const Tensor bias_blocks = cat({flatten(sub(log_w, log_w.detach())), zeros({1}, DType::F64)});
    std::vector<int64_t> index(static_cast<size_t>(B * H * N * N));
    std::vector<double> mask(index.size());
    const KeyCountFn keys = with_causal(testing::layout_keys(layout), causal);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t i = 0; i < N; ++i) {
          for (int64_t j = 0; j < N; ++j) {
            const auto x = static_cast<size_t>(((b * H + h) * N + i) * N + j);
            const bool chosen = testing::layout_keys(layout)(b, h, i, j) > 0;
            index[x] = chosen ? ((b * H + h) * nb + i / 4) * nb + j / 4 : B * H * nb * nb;
            mask[x] = std::log(keys(b, h, i, j));
          }
        }
      }
    }
    const Tensor bias = reshape(index_select(bias_blocks, 0, from_vector(index, {B * H * N * N})), {B, H, N, N});
    const AttentionOutput ref = testing::reference_attention(q, k, v, add(from_vector(mask, {B, H, N, N}), bias), 1.0 / std::sqrt(8.0));
    const auto want = gradients(ref.out, ref.lse, {q, k, v, params[0], params[1]});
    for (size_t i = 0; i < 5; ++i) EXPECT_TRUE(all_close(got[i], want[i], 1e-10, 1e-8)) << "causal " << causal << " input " << i;
    double norm = 0.0;
    for (double g : got[3].to_vector<double>()) norm += g * g;
    EXPECT_GT(norm, 1e-12);  // the scorer does learn
  }
}

TEST(AdaptiveCore, RegulariserIsReturnedAndDifferentiable) {
  auto core = adaptive_core(0.75, 4, 8, 0.1);
  const Tensor q = leaf({1, 16, 2, 8}, 1), k = leaf({1, 16, 2, 8}, 2), v = leaf({1, 16, 2, 8}, 3);
  const AttentionResult r = core->forward(q, k, v, options(true));
  ASSERT_TRUE(r.aux_loss.defined());
  EXPECT_EQ(r.aux_loss.numel(), 1);
  EXPECT_GE(r.aux_loss.item(), 0.0);
  r.aux_loss.backward();
  EXPECT_TRUE(core->parameters()[0].grad().defined());
  EXPECT_FALSE(q.grad().defined());  // the scorer reads detached block means
  EXPECT_FALSE(adaptive_core(0.75, 4, 8)->forward(q, k, v, options(true)).aux_loss.defined());
}

// ---------------------------------------------------------------------------------------------
// Causality of every core.

struct NamedCore {
  std::string label;
  std::unique_ptr<AttentionCore> core;
};

std::vector<NamedCore> every_core() {
  std::vector<NamedCore> cores;
  cores.push_back({"dense", make_attention_core("dense")});
  cores.push_back({"dilated", dilated_core({{8, 16, 64}, {1, 2, 3}})});
  for (const std::string kind : {"local", "dilated", "global_local", "random", "hierarchical"}) {
    cores.push_back({"block_sparse/" + kind, block_core(pattern(kind), 4)});
  }
  cores.push_back({"adaptive", adaptive_core(0.5, 4, 8)});
  return cores;
}

TEST(AttentionCausality, FutureQueriesAndKeysNeverReachEarlierQueries) {
  const int64_t B = 2, N = 30, H = 3, D = 8;
  for (auto& [label, core] : every_core()) {
    for (int64_t t : {0, 9, 17, 22, 28}) {
      const Tensor q = leaf({B, N, H, D}, 1), k = leaf({B, N, H, D}, 2), v = leaf({B, N, H, D}, 3);
      const AttentionResult base = core->forward(q, k, v, options(true));
      // Perturb every query, key and value after position t; the queries by noise, so that a
      // scorer reading them (the adaptive core's) would route differently.
      Tensor q2, k2, v2;
      {
        NoGradGuard ng;
        const Tensor later = cat({zeros({B, t + 1, H, D}, DType::F64), full({B, N - t - 1, H, D}, 1.0, DType::F64)}, 1);
        q2 = add(q, mul(mul(leaf({B, N, H, D}, 4), later), 4.0)).requires_grad_(true);
        k2 = add(k, mul(later, 3.0)).requires_grad_(true);
        v2 = sub(v, mul(later, 3.0)).requires_grad_(true);
      }
      const AttentionResult moved = core->forward(q2, k2, v2, options(true));
      const auto a = base.out.narrow(1, 0, t + 1).contiguous().to_vector<double>();
      const auto b = moved.out.narrow(1, 0, t + 1).contiguous().to_vector<double>();
      EXPECT_EQ(a, b) << label << " t " << t;
      EXPECT_EQ(base.lse.narrow(2, 0, t + 1).contiguous().to_vector<double>(),
                moved.lse.narrow(2, 0, t + 1).contiguous().to_vector<double>())
          << label << " t " << t;
      // A loss on the first t + 1 queries sends no gradient to later queries, keys or values.
      sum(moved.out.narrow(1, 0, t + 1)).backward();
      for (const Tensor& g : {q2.grad(), k2.grad(), v2.grad()}) {
        ASSERT_TRUE(g.defined()) << label;
        for (double x : g.narrow(1, t + 1, N - t - 1).contiguous().to_vector<double>()) {
          ASSERT_EQ(x, 0.0) << label << " t " << t;
        }
      }
    }
  }
}

TEST(AttentionCores, ErrorsNameTheCoreAndShapes) {
  const Tensor q = leaf({1, 8, 2, 4}, 1), k = leaf({1, 9, 2, 4}, 2);
  for (const std::string name : {"dilated", "block_sparse", "adaptive"}) {
    AttentionConfig c;
    c.head_dim = 4;
    try {
      make_attention_core(name, c)->forward(q, k, k, {});
      FAIL() << name << ": no error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("[" + name + "]"), std::string::npos) << msg;
      EXPECT_NE(msg.find("(1, 9, 2, 4)"), std::string::npos) << msg;
    }
  }
  try {
    dilated_core({{8, 16}, {1}});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[dilated]"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace longnet
