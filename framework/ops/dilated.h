#pragma once
// The gathered GPU path of dilated attention (LongNet): each branch (w, r) is gathered into a
// dense batch of sparsified segments, so one fused attention call serves the whole branch, and
// the branches' results merge (or their gradients sum) straight back into the sequence layout.
// Not recorded; CUDA tensors only (the CPU runs the core on strided views instead).
#include <vector>

#include "framework/ops/attention.h"

namespace longnet {

/// One (segment length, dilation rate) pair of a schedule, the segment already clamped to N.
struct DilatedBranch {
  int64_t segment = 0;
  int64_t rate = 1;
  /// Rows per sparsified segment: ceil(segment / rate).
  int64_t length() const { return (segment + rate - 1) / rate; }
};

/// x (B, N, H, D) contiguous -> (B * N / w, L, H, D): row t of head h in segment s is position
/// s w + (h mod r) + r t; rows past the segment's end (heads whose offset leaves fewer than L
/// rows) are zero. N must be a multiple of w. For r = 1 the result is a view of x.
Tensor dilated_gather(const Tensor& x, const DilatedBranch& branch);
/// lse (B, H, N) f32 -> (B * N / w, H, L), the same rows (zero past the segment's end); lse
/// itself when w = N and r = 1.
Tensor dilated_gather_stats(const Tensor& lse, const DilatedBranch& branch);
/// The log-sum-exp merge of gathered branch results (out (B * N / w_i, L_i, H, D), lse
/// (B * N / w_i, H, L_i)) into out (B, N, H, D) and lse (B, H, N).
AttentionOutput dilated_merge(const std::vector<AttentionOutput>& parts, const std::vector<DilatedBranch>& branches,
                              int64_t batch, int64_t n);
/// The sum of gathered branch rows (B * N / w_i, L_i, H, D) at the positions they cover: (B, N, H, D).
Tensor dilated_sum(const std::vector<Tensor>& parts, const std::vector<DilatedBranch>& branches, int64_t batch,
                   int64_t n);

}  // namespace longnet
