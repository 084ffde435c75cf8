#pragma once
// CUDA kernels of the fused optimizer updates; same contracts as framework/cpu/optim_update.h,
// except that the gradient of an f32 parameter may also be bf16 or f16 (read as it is, widened in
// registers). One pass: each element's parameter, gradient and state are read once and the
// parameter and state written once, in 16-byte accesses when all operands are contiguous and
// aligned.
#include <span>

#include "framework/cpu/optim_update.h"

namespace longnet::cuda {

/// AdamW in place on `device` over `shape`.
void adamw_update(int device, const cpu::AdamWScalars& s, const Shape& shape, cpu::StridedOperand param,
                  cpu::StridedOperand grad, cpu::StridedOperand exp_avg, cpu::StridedOperand exp_avg_sq);
/// SGD in place on `device` over `shape` (momentum_buffer.data null when momentum is 0).
void sgd_update(int device, const cpu::SgdScalars& s, const Shape& shape, cpu::StridedOperand param,
                cpu::StridedOperand grad, cpu::StridedOperand momentum_buffer);

/// Tensors one launch of a batched update carries.
inline constexpr int kMaxTensorsPerLaunch = 64;

/// adamw_update on each of `tensors` (state: exp_avg, exp_avg_sq) on `device`, bit-identical to
/// it: the contiguous, aligned tensors in one launch per kMaxTensorsPerLaunch of one dtype pair,
/// each other one on its own.
void adamw_update_many(int device, const cpu::AdamWScalars& s, std::span<const cpu::UpdateOperands> tensors);
/// sgd_update on each of `tensors` (state: the momentum buffer, data null when momentum is 0), in
/// the manner of adamw_update_many.
void sgd_update_many(int device, const cpu::SgdScalars& s, std::span<const cpu::UpdateOperands> tensors);

}  // namespace longnet::cuda
