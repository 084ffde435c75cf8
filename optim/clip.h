#pragma once
// Gradient clipping by the global L2 norm over many parameters.
#include <vector>

#include "framework/core/tensor.h"

namespace longnet::optim {

/// sqrt of the sum of squares of every element of every defined gradient of `params` (f64 sums on
/// the CPU, f32 on GPUs; one host sync per device). Inf or NaN when any gradient element is.
double grad_norm(const std::vector<Tensor>& params);

/// Scales every gradient by max_norm / (norm + 1e-6) when the global norm exceeds max_norm, and
/// returns the norm before clipping. A non-finite norm scales nothing (the caller should skip the
/// step); max_norm <= 0 only measures.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

}  // namespace longnet::optim
