#pragma once
// Moving and converting data between tensors.
#include <span>

#include "framework/core/tensor.h"

namespace longnet {

/// Copies `src` into `dst` elementwise, broadcasting src to dst's shape and converting dtypes;
/// either may be non-contiguous or on another device. Not recorded by autograd.
void copy_(const Tensor& dst, const Tensor& src);
/// copy_(dsts[i], srcs[i]) for every i, pairs of one shape. On a GPU the contiguous pairs of one
/// dtype go in one launch per 64 (gradient buckets: hundreds of small copies). Destinations must
/// not overlap each other or any other pair's source.
void copy_many_(std::span<const Tensor> dsts, std::span<const Tensor> srcs);
/// Sets every element of `dst` to `value`. Not recorded by autograd.
void fill_(const Tensor& dst, double value);
/// `t` converted to `dtype`; differentiable between float types.
Tensor cast(const Tensor& t, DType dtype);
/// `t` copied to `device`; differentiable.
Tensor to_device(const Tensor& t, Device device);

}  // namespace longnet
