#pragma once
// Rotation of the pairs (x_2i, x_2i+1) of each head vector by per-position angles, fused into one
// pass forward and one backward: the core of RoPE / XPOS (layers/positions.h).
#include "framework/core/tensor.h"

namespace longnet {

/// x (B, N, H, D), D even, any float dtype; cos, sin (N, D/2) in f32 (f64 when x is f64), the
/// cosine and sine of pair i's angle at position n, optionally scaled (XPOS). Returns, in x's
/// dtype, out[2i] = x[2i] c - x[2i+1] s and out[2i+1] = x[2i+1] c + x[2i] s, computed in f32
/// (f64 for f64). Differentiable in x; the tables are constants (tables that require grad are
/// rejected). The backward keeps only the tables.
Tensor rotate_pairs(const Tensor& x, const Tensor& cos, const Tensor& sin);

}  // namespace longnet
