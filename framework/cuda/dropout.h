#pragma once
// CUDA dropout kernel; same parameter struct and contract as framework/cpu/dropout.h, plus bf16
// and f16 operands (computed in f32, so x * scale rounds once to the dtype, as the CPU path
// does after its upcast). With the same seed and offset it draws the CPU's mask bit for bit.
#include "framework/cpu/dropout.h"

namespace longnet::cuda {

/// Draws (when p.draw_mask) and applies the keep-mask on `device`; one thread per Philox counter
/// (four consecutive elements).
void dropout(int device, const cpu::DropoutParams& p);

}  // namespace longnet::cuda
