#pragma once
// CPU kernels for indexing along one dim: gather (reads at indexed positions) and scatter-add
// (accumulates at indexed positions), over strided operands.
#include <cstdint>
#include <optional>

#include "framework/cpu/copy.h"

namespace longnet::cpu {

/// One indexed loop. `shape` is the loop shape (the index's shape, or the output's for
/// index_select, whose 1-D index is read with stride 0 off `dim`). Every operand gives its strides
/// over `shape`; the indexed operand's stride at `dim` is its step per index value. Indices must
/// already be in range (see first_out_of_range).
struct IndexParams {
  Shape shape;
  int64_t dim = 0;
  StridedOperand dst;
  StridedOperand src;
  StridedOperand index;  // i32 or i64
};

/// dst[p] = src[p with p[dim] replaced by index[p]]; any dtype shared by dst and src.
void gather(const IndexParams& p);
/// dst[p with p[dim] replaced by index[p]] += src[p]; f32 or f64. Each dst element receives its
/// contributions in loop order (deterministic): threads split the lines off `dim`, which never
/// write to the same element.
void scatter_add(const IndexParams& p);

/// The first of `n` contiguous ids (i32 or i64) outside [0, limit), or nullopt when all are in range.
std::optional<int64_t> first_out_of_range(const void* ids, DType dtype, int64_t n, int64_t limit);

}  // namespace longnet::cpu
