#pragma once
// CPU kernel of the rotary pair rotation (framework/ops/rotary.h): one pass over a contiguous
// (B, N, H, D) block, the (N, D/2) tables read per position.
#include <cstdint>

#include "framework/core/dtype.h"

namespace longnet::cpu {

/// x, out (B, N, H, D) contiguous in `dtype`; cos, sin (N, D/2) contiguous in the compute dtype
/// (f64 for f64 x, else f32). `dtype` is any float type on the GPU, f32 or f64 on the CPU.
struct RotaryParams {
  const void* x = nullptr;
  const void* cos = nullptr;
  const void* sin = nullptr;
  void* out = nullptr;
  DType dtype = DType::F32;
  int64_t batch = 0;
  int64_t seq = 0;  // N: the table row of x's row (b, n, h) is n
  int64_t heads = 0;
  int64_t half = 0;      // D / 2: pairs per row
  bool inverse = false;  // rotate by -angle (the backward): the sign of sin flips
};

/// out[2i] = x[2i] c - x[2i+1] s, out[2i+1] = x[2i+1] c + x[2i] s with (c, s) = table[n][i]
/// (s negated when inverse), in the compute dtype.
void rotate_pairs(const RotaryParams& p);

}  // namespace longnet::cpu
