#pragma once
// Kernels of the dilated core's gathered path on the GPU: each branch (w, r) is gathered into a
// dense batch of sparsified segments, one fused attention call runs per branch, and the branches'
// results are merged (or their gradients summed) straight into the sequence layout.
#include <cstdint>

#include "framework/core/dtype.h"

namespace longnet::cuda {

/// Most branches a merge or sum takes.
inline constexpr int kMaxDilatedBranches = 8;

/// One branch's compact tensors: rows (B * N / w, L, H, D) with L = ceil(w / r), and for merges
/// their lse (B * N / w, H, L) in f32.
struct DilatedPart {
  const void* rows = nullptr;
  const float* lse = nullptr;
  int64_t segment = 0, rate = 0, length = 0;
};

/// Geometry of the sequence side: (B, N, H, D), contiguous.
struct DilatedShape {
  int64_t batch = 0, n = 0, heads = 0, head_dim = 0;
};

/// dst (B * N / w, L, H, D) = rows of src (B, N, H, D): row t of head h in segment s is position
/// s w + (h mod r) + r t, zero past the segment's end. dtype bf16/f16/f32; head_dim % 8 == 0.
void dilated_gather(int device, DType dtype, const DilatedShape& s, int64_t w, int64_t r, const void* src, void* dst);
/// The same for statistics: (B, H, N) f32 -> (B * N / w, H, L), zero past the segment's end.
void dilated_gather_stats(int device, const DilatedShape& s, int64_t w, int64_t r, const float* src, float* dst);
/// out (B, N, H, D) and lse (B, H, N) = the log-sum-exp merge of the parts over the rows each
/// covers (rows no part covers: out 0, lse -inf).
void dilated_merge(int device, DType dtype, const DilatedShape& s, const DilatedPart* parts, int count, void* out,
                   float* lse);
/// dst (B, N, H, D) = the sum over parts of their rows at the positions they cover.
void dilated_sum(int device, DType dtype, const DilatedShape& s, const DilatedPart* parts, int count, void* dst);

}  // namespace longnet::cuda
