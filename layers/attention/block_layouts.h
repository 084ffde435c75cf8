#pragma once
// Block layouts of the block-sparse core's patterns.
#include "framework/ops/attention.h"
#include "layers/attention/core.h"

namespace longnet {

/// The layout of `pattern` for a self-attention of n rows in blocks of `block_size` and `heads`
/// heads. Every query block visits its own (diagonal) block; with causal attention, key blocks
/// after the query block are dropped (inside the diagonal block the kernel masks the future).
/// Patterns (distances in blocks):
///   local         blocks within `window` of the query block;
///   dilated       blocks at multiples of `dilation`, up to `window` steps away;
///   global_local  local, plus the first `global_blocks` blocks, which also see everything;
///   random        `random_blocks` distinct blocks per (head, query block), drawn from the
///                 Philox stream of `seed` (so each head has its own);
///   hierarchical  for scale l < levels, every level_factor^l-th block within
///                 window * level_factor^l, plus the global blocks;
///   user          `user_layout` as given (checked to fit).
AttentionLayout make_block_layout(const BlockPattern& pattern, int64_t block_size, int64_t n, int64_t heads,
                                  bool causal);

}  // namespace longnet
