#pragma once
// CPU dropout kernel: draws (or reuses) a keep-mask from the Philox stream and applies it.
#include <cstdint>

#include "framework/cpu/copy.h"

namespace longnet::cpu {

/// Dropout over `shape`. `out` and `mask` are contiguous, so an element's offset in them is its
/// row-major index i; `x` may be strided. out and x share dtype f32 or f64.
struct DropoutParams {
  Shape shape;
  StridedOperand out;
  StridedOperand x;
  uint8_t* mask = nullptr;  // 1 = kept
  bool draw_mask = true;    // false: reuse `mask` (the backward)
  double p = 0.0;
  uint64_t seed = 0;
  uint64_t offset = 0;  // first Philox counter of the draw
};

/// When draw_mask, mask[i] = (philox_uniform(seed, offset, i) >= p), the comparison exact (the
/// uniform is k / 2^24, so a device kernel may equally test k >= ceil(p * 2^24)). Then
/// out[i] = x[i] * mask[i] / (1 - p), the scale 1 / (1 - p) rounded once to the dtype.
void dropout(const DropoutParams& p);

}  // namespace longnet::cpu
