#pragma once
// CUDA kernel of the rotary pair rotation; same parameter struct and contract as
// framework/cpu/rotary.h, for f32, f64, bf16 and f16 x (tables in f32, f64 for f64 x; each pair
// computed in the table's precision and rounded once to x's dtype).
#include "framework/cpu/rotary.h"

namespace longnet::cuda {

/// One pass on `device`: every thread rotates one 16-byte pack of x (8 bf16 / f16 values, 4 f32,
/// 2 f64) with the matching table values, when D fills whole packs and the pointers are aligned;
/// one pair a thread otherwise.
void rotate_pairs(int device, const cpu::RotaryParams& p);

}  // namespace longnet::cuda
