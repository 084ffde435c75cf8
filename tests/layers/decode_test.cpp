// Incremental decoding of every attention core: rows computed chunk by chunk against a KV cache
// equal the rows of the core's causal forward over the whole sequence at every position, for
// prefill chunks and single steps, B > 1, lengths that are not multiples of segments or blocks.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "layers/attention/adaptive.h"
#include "layers/attention/core.h"
#include "layers/attention/decode.h"
#include "tests/layers/block_patterns.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::error_message;

struct Dims {
  int64_t B, N, H, D;
};

struct Qkv {
  Tensor q, k, v;
};

Qkv random_qkv(const Dims& s, DType dtype, uint64_t seed) {
  Generator g(seed);
  const Shape shape{s.B, s.N, s.H, s.D};
  return {randn(shape, dtype, Device::cpu(), &g), randn(shape, dtype, Device::cpu(), &g),
          randn(shape, dtype, Device::cpu(), &g)};
}

// Chunk sizes covering n rows: a prefill of `prefill` rows (0: none) then single steps.
std::vector<int64_t> prefill_then_steps(int64_t n, int64_t prefill) {
  std::vector<int64_t> c;
  if (prefill > 0) c.push_back(prefill);
  for (int64_t i = prefill; i < n; ++i) c.push_back(1);
  return c;
}

// Irregular chunks (crossing segment and block boundaries anywhere) covering n rows.
std::vector<int64_t> ragged_chunks(int64_t n) {
  const int64_t pattern[] = {5, 1, 9, 3, 1, 17, 2, 7};
  std::vector<int64_t> c;
  for (int64_t at = 0, i = 0; at < n; ++i) {
    c.push_back(std::min(pattern[i % 8], n - at));
    at += c.back();
  }
  return c;
}

// Decodes q, k, v in `chunks` through `core` and compares every chunk's out and lse with the rows
// of the causal forward.
void expect_decode_matches(AttentionCore& core, const Qkv& x, const std::vector<int64_t>& chunks, double atol,
                           int64_t cache_chunk = 8) {
  AttentionOptions causal;
  causal.causal = true;
  const AttentionResult full = core.forward(x.q, x.k, x.v, causal);
  KvCache cache(x.q.size(1), cache_chunk);
  int64_t at = 0;
  for (int64_t n : chunks) {
    const AttentionResult r = core.decode(x.q.narrow(1, at, n), x.k.narrow(1, at, n), x.v.narrow(1, at, n), cache);
    EXPECT_TRUE(all_close(r.out, full.out.narrow(1, at, n), atol, atol)) << core.name() << " rows " << at << "+" << n;
    EXPECT_TRUE(all_close(r.lse, full.lse.narrow(2, at, n), atol, atol)) << core.name() << " rows " << at << "+" << n;
    at += n;
  }
  EXPECT_EQ(cache.length(), x.q.size(1));
}

// Every schedule: single steps from the start, a prefill then steps, ragged chunks.
void expect_all_schedules(AttentionCore& core, const Dims& s, uint64_t seed = 3, double atol = 2e-5) {
  const Qkv x = random_qkv(s, DType::F32, seed);
  SCOPED_TRACE(core.name());
  expect_decode_matches(core, x, prefill_then_steps(s.N, 0), atol);
  expect_decode_matches(core, x, prefill_then_steps(s.N, 13), atol);
  expect_decode_matches(core, x, ragged_chunks(s.N), atol);
}

AttentionConfig dilated_config(std::vector<int64_t> w, std::vector<int64_t> r) {
  AttentionConfig c;
  c.segment_lengths = std::move(w);
  c.dilation_rates = std::move(r);
  return c;
}

TEST(Decode, DenseEqualsCausalForward) {
  auto core = make_attention_core("dense");
  expect_all_schedules(*core, {2, 37, 3, 8});
}

TEST(Decode, DenseStepsOverLongCachesSplitTheKeys) {
  // From 2048 cached keys a single-row step splits the keys in 1024s and merges the splits; the
  // steps cover a length with a remainder and one (3072) without.
  auto core = make_attention_core("dense");
  const Qkv x = random_qkv({2, 3075, 2, 8}, DType::F32, 9);
  expect_decode_matches(*core, x, prefill_then_steps(3075, 3069), 2e-5, 1024);
}

TEST(Decode, DilatedEqualsCausalForward) {
  // N = 37 is a multiple of no segment; heads 4 with rates up to 4.
  auto a = make_attention_core("dilated", dilated_config({4, 8, 16}, {1, 2, 4}));
  expect_all_schedules(*a, {2, 37, 4, 8});
  // No rate-1 branch (rows no branch covers have lse -inf), rates above the head count, and a
  // segment longer than the sequence.
  auto b = make_attention_core("dilated", dilated_config({6, 12, 64}, {2, 3, 5}));
  expect_all_schedules(*b, {2, 41, 4, 8}, 4);
  // Duplicated branches count their keys twice, as in the forward.
  auto c = make_attention_core("dilated", dilated_config({8, 8, 16}, {2, 2, 1}));
  expect_all_schedules(*c, {1, 30, 2, 4}, 5);
}

TEST(Decode, DilatedF64IsExactToRounding) {
  auto core = make_attention_core("dilated", dilated_config({4, 8, 16}, {1, 2, 4}));
  const Qkv x = random_qkv({2, 29, 4, 8}, DType::F64, 6);
  expect_decode_matches(*core, x, ragged_chunks(29), 1e-12);
}

TEST(Decode, BlockSparseEqualsCausalForwardForEveryPattern) {
  for (const std::string kind : {"local", "dilated", "global_local", "random", "hierarchical"}) {
    AttentionConfig c;
    c.block_size = 4;
    c.pattern = testing::test_pattern(kind, kind == "dilated" ? 2 : 1);
    auto core = make_attention_core("block_sparse", c);
    SCOPED_TRACE(kind);
    expect_all_schedules(*core, {2, 37, 3, 8});
  }
}

TEST(Decode, BlockSparseUserLayoutWithUnevenListsAndNoDiagonal) {
  // 10 blocks of 4 rows (N = 37), per-head lists of different lengths; head 1 skips its diagonal
  // from block 3 on (those rows see only earlier blocks), and lists name future blocks, which
  // causal attention drops.
  const int64_t heads = 2, blocks = 10;
  std::vector<std::vector<int64_t>> rows;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < blocks; ++i) {
      std::vector<int64_t> r;
      if (h == 0) r = {0, i / 2, i, std::min(i + 2, blocks - 1)};
      else r = i < 3 ? std::vector<int64_t>{i} : std::vector<int64_t>{i - 3, i - 1};
      rows.push_back(r);
    }
  }
  AttentionConfig c;
  c.block_size = 4;
  c.pattern.kind = "user";
  c.pattern.user_layout = std::make_shared<const AttentionLayout>(AttentionLayout::from_rows(4, 1, heads, blocks, blocks, rows));
  auto core = make_attention_core("block_sparse", c);
  expect_all_schedules(*core, {2, 37, heads, 8});
}

TEST(Decode, AdaptiveEqualsCausalForward) {
  // 12 blocks keeping 4: blocks 4 and later are routed by the scorer, per batch element and head.
  AttentionConfig c;
  c.block_size = 4;
  c.sparsity = 0.7;
  c.head_dim = 8;
  c.scorer_dim = 4;
  c.seed = 11;
  auto core = make_attention_core("adaptive", c);
  expect_all_schedules(*core, {2, 45, 3, 8});
  // The forward's routing differs per batch element and head here, so the check above is not
  // met by a shared choice.
  NoGradGuard no_grad;
  const Qkv x = random_qkv({2, 45, 3, 8}, DType::F32, 3);
  AttentionOptions causal;
  causal.causal = true;
  core->forward(x.q, x.k, x.v, causal);
  const auto& l = *dynamic_cast<AdaptiveAttention&>(*core).last_layout();
  auto list = [&](int64_t b, int64_t h, int64_t i) {
    const int64_t r = l.row(b, h, i);
    return std::vector<int64_t>(l.key_block_ids.begin() + l.row_offsets[r], l.key_block_ids.begin() + l.row_offsets[r + 1]);
  };
  bool differ = false;
  for (int64_t i = 4; i < 12; ++i) differ = differ || list(0, 0, i) != list(1, 0, i) || list(0, 0, i) != list(0, 1, i);
  EXPECT_TRUE(differ);
}

TEST(Decode, StepsReadOnlyTheKeysTheyVisit) {
  // Poisoning cached rows that the step must not see (NaN keys and values) leaves its result
  // finite and equal to the forward's: decoding reads only the pattern's keys, not the cache.
  struct Case {
    std::string core;
    AttentionConfig config;
    int64_t hidden_before;  // rows [0, hidden_before) are outside the last row's pattern
  };
  AttentionConfig local;
  local.block_size = 4;
  local.pattern = testing::test_pattern("local", 1);
  const int64_t n = 37;
  for (const Case& c : {Case{"dilated", dilated_config({4, 8, 16}, {1, 2, 4}), 32}, Case{"block_sparse", local, 28}}) {
    auto core = make_attention_core(c.core, c.config);
    const Qkv x = random_qkv({1, n, 4, 8}, DType::F32, 8);
    AttentionOptions causal;
    causal.causal = true;
    const AttentionResult full = core->forward(x.q, x.k, x.v, causal);
    KvCache cache(n);
    core->decode(x.q.narrow(1, 0, n - 1), x.k.narrow(1, 0, n - 1), x.v.narrow(1, 0, n - 1), cache);
    fill_(cache.key_storage().narrow(1, 0, c.hidden_before), std::nan(""));
    fill_(cache.value_storage().narrow(1, 0, c.hidden_before), std::nan(""));
    const AttentionResult r =
        core->decode(x.q.narrow(1, n - 1, 1), x.k.narrow(1, n - 1, 1), x.v.narrow(1, n - 1, 1), cache);
    EXPECT_TRUE(all_close(r.out, full.out.narrow(1, n - 1, 1), 2e-5, 2e-5)) << c.core;
  }
}

TEST(KvCache, GrowsByChunksAndKeepsRows) {
  KvCache cache(40, 8);
  EXPECT_EQ(cache.capacity(), 0);
  Generator g(1);
  std::vector<Tensor> ks, vs;
  for (int64_t n : {3, 6, 10, 15, 6}) {
    ks.push_back(randn({2, n, 2, 4}, DType::F32, Device::cpu(), &g));
    vs.push_back(randn({2, n, 2, 4}, DType::F32, Device::cpu(), &g));
    cache.append(ks.back(), vs.back());
    EXPECT_EQ(cache.capacity() % 8 == 0 || cache.capacity() == 40, true);
    EXPECT_GE(cache.capacity(), cache.length());
  }
  EXPECT_EQ(cache.length(), 40);
  EXPECT_EQ(cache.capacity(), 40);  // capped at max_length
  EXPECT_TRUE(all_close(cache.keys(), cat(ks, 1), 0.0, 0.0));
  EXPECT_TRUE(all_close(cache.values(), cat(vs, 1), 0.0, 0.0));
  cache.clear();
  EXPECT_EQ(cache.length(), 0);
}

TEST(KvCache, RejectsBadInput) {
  KvCache cache(10);
  const Tensor a = zeros({1, 6, 2, 4});
  cache.append(a, a);
  EXPECT_NE(error_message([&] { cache.append(a, a); }).find("6 new rows after 6 exceed max_length 10"),
            std::string::npos);
  const Tensor other = zeros({1, 1, 3, 4});
  EXPECT_NE(error_message([&] { cache.append(other, other); }).find("do not match the cache's (B, H, D) = (1, 2, 4)"),
            std::string::npos);
  EXPECT_NE(error_message([&] { cache.append(a, zeros({1, 6, 2, 5})); }).find("of one shape"), std::string::npos);
  EXPECT_NE(error_message([] { KvCache bad(0); }).find("must be positive"), std::string::npos);
}

TEST(Decode, RejectsBadInput) {
  auto core = make_attention_core("dense");
  KvCache cache(8);
  const Tensor q = zeros({1, 2, 2, 4});
  EXPECT_NE(error_message([&] { core->decode(q, zeros({1, 3, 2, 4}), zeros({1, 3, 2, 4}), cache); }).find("[dense]"),
            std::string::npos);
  const Tensor empty = zeros({1, 0, 2, 4});
  EXPECT_NE(error_message([&] { core->decode(empty, empty, empty, cache); }).find("at least one new row"),
            std::string::npos);
  // A core without a decode step says so.
  struct Plain final : AttentionCore {
    std::string name() const override { return "plain"; }
    AttentionResult forward(const Tensor& q, const Tensor&, const Tensor&, const AttentionOptions&) override {
      return {q, Tensor(), Tensor()};
    }
  } plain;
  EXPECT_NE(error_message([&] { plain.decode(q, q, q, cache); }).find("[plain] does not support decoding"),
            std::string::npos);
}

}  // namespace
}  // namespace longnet
