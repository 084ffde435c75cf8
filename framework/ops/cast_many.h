#pragma once
// Converting many tensors at once: the parameters a layer casts to its compute dtype on every
// forward, whose per-tensor casts (and their gradients' casts back) are mostly launch cost.
#include <span>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet {

/// cast(t, dtype) for every t of `tensors`, bit for bit: a tensor already in `dtype` (or undefined)
/// comes back as it is. On a GPU the contiguous, 16-byte-aligned float tensors of one device and
/// dtype convert in one launch per 64. Differentiable between float types through one node for
/// all of them, whose backward converts the defined gradients back the same way (an output that
/// receives no gradient gives its input none).
std::vector<Tensor> cast_many(std::span<const Tensor> tensors, DType dtype);

}  // namespace longnet
