#pragma once
// CPU flash-style attention: tiles of keys with an online softmax per query row (the score matrix
// is never materialised), the exact backward from the final output and log-sum-exp, and the
// log-sum-exp merge of partial results. Kernels take strided views, so callers can hand in
// segments or dilated rows of a larger tensor without a gather copy.
#include <cstdint>

#include "framework/core/dtype.h"

namespace longnet::cpu {

/// Most leading batch dims an attention operand may have.
inline constexpr int kAttentionMaxBatchDims = 4;

/// Geometry shared by every operand: q (batch..., q_len, heads, head_dim), k and v
/// (batch..., k_len, heads, head_dim).
struct AttentionShape {
  int batch_dims = 0;
  int64_t batch_sizes[kAttentionMaxBatchDims] = {};
  int64_t q_len = 0;
  int64_t k_len = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  /// Product of the batch sizes.
  int64_t batch() const {
    int64_t n = 1;
    for (int i = 0; i < batch_dims; ++i) n *= batch_sizes[i];
    return n;
  }
};

/// A strided operand: element (b..., row, head, d) lies at data + sum(b_i * batch[i]) +
/// row * row + head * head + d (unit stride along head_dim). lse-shaped operands (batch..., heads,
/// rows) and the key-padding mask (batch..., rows) use the same struct with d = 0 (and head = 0).
/// `data` is only written for outputs. Rows of q, k, v, out and their gradients are BLAS matrix
/// rows: row >= head_dim (rows do not overlap) and below 2^31.
struct AttentionView {
  void* data = nullptr;
  int64_t batch[kAttentionMaxBatchDims] = {};
  int64_t row = 0;
  int64_t head = 0;
};

/// Block-sparse layout in CSR form over rows (layout batch, layout head, query block): row r
/// visits key blocks key_blocks[row_offsets[r] .. row_offsets[r + 1]). A layout batch or head
/// count of 1 is shared by every batch element or head.
struct AttentionLayoutView {
  int64_t block = 0;  // rows per query block and per key block; 0 means dense (no layout)
  int64_t batch = 1;
  int64_t heads = 1;
  int64_t q_blocks = 0;
  int64_t k_blocks = 0;
  const int64_t* row_offsets = nullptr;  // batch * heads * q_blocks + 1
  const int64_t* key_blocks = nullptr;   // row_offsets[last] entries
};

/// Which keys a query sees: key j is visible to query i unless causal and j > i + causal_offset,
/// or key_padding[b, j] is nonzero, or (with a layout) j's block is not listed for i's block.
struct AttentionMask {
  double scale = 1.0;
  bool causal = false;
  int64_t causal_offset = 0;
  AttentionView key_padding;  // u8/bool (batch..., k_len); data null when there is none
  AttentionLayoutView layout;
  const void* block_bias = nullptr;  // (layout entries) in the compute dtype, added to the scaled
                                     // scores of each listed block; null when none
};

/// Forward: out (batch..., q_len, heads, D) and lse (batch..., heads, q_len) are written. Rows
/// with no visible key get out = 0 and lse = -inf.
struct AttentionForwardParams {
  DType dtype = DType::F32;  // of every float operand (f32 or f64)
  AttentionShape shape;
  AttentionView q, k, v, out, lse;
  AttentionMask mask;
};

/// Backward given the FINAL out and lse of the attention this call is a part of (the merged
/// result when several parts were combined) and their gradients dout and dlse (dlse data may be
/// null: zero). Gradients of q, k, v whose data is null are not computed; `accumulate` adds into
/// dq, dk, dv instead of overwriting them. block_bias_grad (layout entries, may be null) gets the
/// sum of the score gradients over each listed block added to it; it needs a layout with one
/// group per batch element and head (a shared entry would be written by several threads).
struct AttentionBackwardParams {
  DType dtype = DType::F32;
  AttentionShape shape;
  AttentionView q, k, v, out, lse, dout, dlse;
  AttentionView dq, dk, dv;
  AttentionMask mask;
  bool accumulate = false;
  void* block_bias_grad = nullptr;
};

/// Flash-style forward; OpenMP over (batch, head, query tile).
void attention_forward(const AttentionForwardParams& p);
/// Flash-style backward: dk, dv parallel over key tiles, dq over query tiles (no atomics, so the
/// result does not depend on the thread count).
void attention_backward(const AttentionBackwardParams& p);

/// Merge of `parts` partial attention results over the same rows, all contiguous:
/// o_i (rows, heads, D) with rows = batch * q_len, lse_i (batch, heads, q_len).
/// L = logsumexp_i lse_i, O = sum_i exp(lse_i - L) o_i; rows whose lse are all -inf get O = 0.
/// `out` / `lse_out` may alias part 0 (the merge is done row by row).
struct AttentionMergeParams {
  DType dtype = DType::F32;
  int64_t parts = 0;
  const void* const* o = nullptr;
  const void* const* lse = nullptr;
  void* out = nullptr;
  void* lse_out = nullptr;
  int64_t batch = 0, q_len = 0, heads = 0, head_dim = 0;
};

/// Backward of the merge with w_i = exp(lse_i - L): do_i = w_i dO and
/// dlse_i = w_i (dO . o_i - dO . O + dL). dlse_out may be null (zero).
struct AttentionMergeBackwardParams {
  AttentionMergeParams fwd;  // the forward's inputs and outputs
  const void* dout = nullptr;
  const void* dlse_out = nullptr;
  void* const* do_parts = nullptr;
  void* const* dlse_parts = nullptr;
};

void attention_merge(const AttentionMergeParams& p);
void attention_merge_backward(const AttentionMergeBackwardParams& p);

}  // namespace longnet::cpu
