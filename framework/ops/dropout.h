#pragma once
// Dropout from the Philox stream: the same seed and offset give the same mask on every device.
#include "framework/core/rng.h"
#include "framework/core/tensor.h"

namespace longnet {

/// Zeroes each element with probability p and scales the rest by 1 / (1 - p) when training;
/// identity otherwise. Element i is kept when philox_uniform(i) >= p.
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen = nullptr);

}  // namespace longnet
