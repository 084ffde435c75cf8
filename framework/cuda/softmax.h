#pragma once
// CUDA softmax and log-softmax over the rows of a contiguous (rows, len) block; same contracts as
// framework/cpu/softmax.h, for f32, f64, bf16 and f16 (16-bit storage, f32 arithmetic).
#include "framework/cpu/softmax.h"

namespace longnet::cuda {

/// y = softmax(x) or log_softmax(x) per row on `device`; a row of all -inf gives 0 (-inf).
void softmax_rows(int device, const cpu::SoftmaxParams& p);
/// The backward of softmax_rows on `device`.
void softmax_backward_rows(int device, const cpu::SoftmaxBackwardParams& p);

}  // namespace longnet::cuda
