#include "layers/attention/block_layouts.h"

#include <algorithm>
#include <functional>
#include <unordered_set>

#include "framework/core/rng.h"

namespace longnet {
namespace {

// Adds the blocks a pattern visits from query block i of head h to `out`.
using RowFn = std::function<void(int64_t h, int64_t i, std::vector<int64_t>& out)>;

AttentionLayout build(int64_t block_size, int64_t blocks, int64_t heads, bool causal, const RowFn& f) {
  std::vector<std::vector<int64_t>> rows;
  rows.reserve(static_cast<size_t>(heads * blocks));
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < blocks; ++i) {
      std::vector<int64_t> r{i};
      f(h, i, r);
      std::erase_if(r, [&](int64_t j) { return j < 0 || j >= blocks || (causal && j > i); });
      rows.push_back(std::move(r));
    }
  }
  return AttentionLayout::from_rows(block_size, 1, heads, blocks, blocks, std::move(rows));
}

// Blocks i + t * step for |t| <= reach.
void add_strided(int64_t i, int64_t reach, int64_t step, std::vector<int64_t>& out) {
  for (int64_t t = -reach; t <= reach; ++t) out.push_back(i + t * step);
}

// The first g blocks, and every block when the query block is one of them.
void add_global(int64_t i, int64_t g, int64_t blocks, std::vector<int64_t>& out) {
  for (int64_t j = 0; j < (i < g ? blocks : std::min(g, blocks)); ++j) out.push_back(j);
}

// `count` distinct blocks of [0, limit) other than i (Floyd's sampling), from Philox counter
// `stream` under `seed`.
void add_random(int64_t i, int64_t limit, int64_t count, uint64_t seed, uint64_t stream, std::vector<int64_t>& out) {
  const int64_t m = limit - 1;  // candidates: [0, limit) without i, numbered 0 .. m-1
  if (count >= m) {
    for (int64_t j = 0; j < limit; ++j) out.push_back(j);
    return;
  }
  std::unordered_set<int64_t> chosen;
  uint32_t words[4];
  for (int64_t x = m - count, draw = 0; x < m; ++x, ++draw) {
    if (draw % 4 == 0) philox_words(seed, stream * 1024 + static_cast<uint64_t>(draw / 4), words);
    const auto t = static_cast<int64_t>(words[draw % 4] % static_cast<uint64_t>(x + 1));
    chosen.insert(chosen.count(t) ? x : t);
  }
  for (int64_t c : chosen) out.push_back(c < i ? c : c + 1);
}

}  // namespace

AttentionLayout make_block_layout(const BlockPattern& p, int64_t block_size, int64_t n, int64_t heads, bool causal) {
  LN_CHECK(block_size > 0, "[block_sparse] block size must be positive, got ", block_size);
  const int64_t blocks = (n + block_size - 1) / block_size;
  LN_CHECK(p.window >= 0 && p.dilation > 0 && p.global_blocks >= 0 && p.random_blocks >= 0 && p.levels > 0 &&
               p.level_factor > 0,
           "[block_sparse] pattern '", p.kind, "' has a negative or zero parameter (window ", p.window, ", dilation ",
           p.dilation, ", global ", p.global_blocks, ", random ", p.random_blocks, ", levels ", p.levels, ", factor ",
           p.level_factor, ")");
  if (p.kind == "local") {
    return build(block_size, blocks, 1, causal, [&](int64_t, int64_t i, auto& out) { add_strided(i, p.window, 1, out); });
  }
  if (p.kind == "dilated") {
    return build(block_size, blocks, 1, causal,
                 [&](int64_t, int64_t i, auto& out) { add_strided(i, p.window, p.dilation, out); });
  }
  if (p.kind == "global_local") {
    return build(block_size, blocks, 1, causal, [&](int64_t, int64_t i, auto& out) {
      add_strided(i, p.window, 1, out);
      add_global(i, p.global_blocks, blocks, out);
    });
  }
  if (p.kind == "random") {
    return build(block_size, blocks, heads, causal, [&](int64_t h, int64_t i, auto& out) {
      add_random(i, causal ? i + 1 : blocks, p.random_blocks, p.seed, static_cast<uint64_t>(h * blocks + i), out);
    });
  }
  if (p.kind == "hierarchical") {
    return build(block_size, blocks, 1, causal, [&](int64_t, int64_t i, auto& out) {
      int64_t step = 1;
      for (int64_t l = 0; l < p.levels; ++l, step *= p.level_factor) add_strided(i, p.window, step, out);
      add_global(i, p.global_blocks, blocks, out);
    });
  }
  if (p.kind == "user") {
    LN_CHECK(p.user_layout, "[block_sparse] pattern 'user' needs a layout");
    const AttentionLayout& l = *p.user_layout;
    LN_CHECK(l.block_size == block_size && l.query_blocks == blocks && l.key_blocks == blocks, "[block_sparse] user layout of ",
             l.query_blocks, " x ", l.key_blocks, " blocks of ", l.block_size, " does not fit ", n, " rows in blocks of ",
             block_size);
    return l;
  }
  LN_FAIL("[block_sparse] unknown pattern '", p.kind, "'; known: local, dilated, global_local, random, hierarchical, user");
}

}  // namespace longnet
