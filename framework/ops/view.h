#pragma once
// View ops: new geometry over the same storage, recorded by autograd. Tensor's member functions
// (view, reshape, permute, ...) call these.
#include <vector>

#include "framework/core/tensor.h"

namespace longnet {

/// Same data with a new shape; needs a compatible layout (one size may be -1).
Tensor view(const Tensor& t, const Shape& shape);
/// A view when the layout allows, else a contiguous copy.
Tensor reshape(const Tensor& t, const Shape& shape);
/// Dimensions reordered: out.shape[i] = t.shape[dims[i]].
Tensor permute(const Tensor& t, const std::vector<int64_t>& dims);
/// Two dimensions swapped.
Tensor transpose(const Tensor& t, int64_t d0, int64_t d1);
/// Elements start, start + step, ... below end along dim.
Tensor slice(const Tensor& t, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
/// Elements [start, start + length) along dim.
Tensor narrow(const Tensor& t, int64_t dim, int64_t start, int64_t length);
/// Size-1 dims (and new leading dims) broadcast to `shape` with stride 0; -1 keeps a size.
Tensor expand(const Tensor& t, const Shape& shape);
/// Removes dim (which must have size 1).
Tensor squeeze(const Tensor& t, int64_t dim);
/// Inserts a size-1 dim at `dim`.
Tensor unsqueeze(const Tensor& t, int64_t dim);
/// Merges dims [start_dim, end_dim] into one.
Tensor flatten(const Tensor& t, int64_t start_dim = 0, int64_t end_dim = -1);
/// A contiguous copy (differentiable).
Tensor clone(const Tensor& t);
/// `t` if contiguous, else clone(t).
Tensor contiguous(const Tensor& t);
/// Sums `grad` over broadcast dims so it has `shape` (the backward of broadcasting).
Tensor sum_to(const Tensor& grad, const Shape& shape);

}  // namespace longnet
