#pragma once
// Fused normalisations over the last dimension (one pass over each row forward, one backward).
#include "framework/core/tensor.h"

namespace longnet {

/// LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * weight + bias.
/// x (..., D); weight, bias (D) or undefined (then 1 and 0). Statistics in f32 or wider.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
/// RMSNorm over the last dim: x / sqrt(mean(x^2) + eps) * weight. x (..., D); weight (D) or undefined.
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
/// layer_norm(gelu(x), weight, bias, eps) with the erf GELU, fused: one pass over x forward and
/// one backward, and the graph keeps x alone (not gelu(x)). x (..., D).
Tensor gelu_layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
/// rms_norm(gelu(x), weight, eps), fused as gelu_layer_norm. x (..., D).
Tensor gelu_rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-6);

}  // namespace longnet
