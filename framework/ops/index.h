#pragma once
// Indexing ops.
#include <optional>

#include "framework/core/tensor.h"

namespace longnet {

/// Entries of x at `index` (1-D, i32/i64) along dim: out.shape[dim] = index.numel().
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
/// out[i][j][k] = x[i][index[i][j][k]][k] for dim = 1 (and likewise for other dims);
/// index has x's number of dims and sizes no larger than x's off `dim`.
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
/// A copy of x with src added at `index` along dim: out[i][index[i][j][k]][k] += src[i][j][k].
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);

namespace ops {
/// The first element of the contiguous i32/i64 tensor `ids` (on any device) outside [0, limit),
/// or nullopt when all are in range. For GPU ids this synchronises with the device.
std::optional<int64_t> first_out_of_range(const Tensor& ids, int64_t limit);
}  // namespace ops

}  // namespace longnet
