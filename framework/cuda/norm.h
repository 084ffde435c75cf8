#pragma once
// CUDA LayerNorm / RMSNorm over the rows of a contiguous (rows, len) block; same contracts as
// framework/cpu/norm.h for f32, f64, bf16 and f16, except that the statistics (mean, rstd) are
// always f32 (f64 for f64 inputs) whatever the storage dtype of x.
#include "framework/cpu/norm.h"

namespace longnet::cuda {

/// One pass per row on `device`: the row stays in registers while its mean and centred variance
/// are reduced, then y is written. mean / rstd: (rows) in f32 (f64 for f64).
void norm_forward(int device, const cpu::NormParams& p);
/// dx per row in one pass (the row in registers), plus p.dx_add when given (read as dx is
/// written, so it may be dx itself); dweight / dbias as per-block partial sums in f32 (f64) added
/// in a fixed order by a second kernel, so results are deterministic.
void norm_backward(int device, const cpu::NormBackwardParams& p);

}  // namespace longnet::cuda
