#pragma once
// Shapes and strides (row-major, dim 0 outermost, strides in elements).
#include <cstdint>
#include <string>
#include <vector>

namespace longnet {

/// Sizes of each dimension.
using Shape = std::vector<int64_t>;
/// Step in elements between neighbours along each dimension.
using Strides = std::vector<int64_t>;

/// Product of the sizes (1 for a scalar).
int64_t numel_of(const Shape& shape);
/// Row-major strides of a contiguous tensor of this shape.
Strides contiguous_strides(const Shape& shape);
/// "(4, 8)"; a scalar prints as "()".
std::string shape_str(const Shape& shape);
/// Wraps a possibly negative dim into [0, ndim); throws naming `op` when out of range.
int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op);
/// The shape both operands broadcast to (NumPy rules); throws naming `op` if they cannot.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

}  // namespace longnet
