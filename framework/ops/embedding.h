#pragma once
// Embedding lookup.
#include "framework/core/tensor.h"

namespace longnet {

/// weight (V, D) rows gathered by i32/i64 `indices` of any shape -> (..., D). The backward
/// scatter-adds into a (V, D) gradient in a fixed order (deterministic). Out-of-range ids throw.
Tensor embedding(const Tensor& weight, const Tensor& indices);

}  // namespace longnet
