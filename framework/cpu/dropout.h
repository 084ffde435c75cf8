#pragma once
// CPU dropout kernel: draws (or reuses) a keep-mask from the Philox stream and applies it. The
// keep rule and the Philox counter layout below are shared with the CUDA kernel, so both draw
// the same mask bit for bit.
#include <cmath>
#include <cstdint>

#include "framework/core/rng.h"
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

/// Element i is kept when (word >> 8) >= dropout_threshold(p), where word is its Philox word.
/// As the uniform of a word is (word >> 8) / 2^24 and p * 2^24 is exact in double, this is the
/// same as uniform >= p, decided in integers so that no device's float rounding can change it.
inline uint32_t dropout_threshold(double p) { return static_cast<uint32_t>(std::ceil(p * 16777216.0)); }

/// When draw_mask, mask[i] = keep rule above for element i of the draw at (seed, offset). Then
/// out[i] = x[i] * mask[i] / (1 - p), the scale 1 / (1 - p) rounded once to the dtype.
void dropout(const DropoutParams& p);

}  // namespace longnet::cpu
