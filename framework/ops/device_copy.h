#pragma once
// Copies and fills that involve a GPU. The CUDA backend provides them; a CPU-only build reports
// that no such device exists.
#include "framework/core/tensor.h"

namespace longnet::ops {

/// copy_ where dst or src is on a GPU (same geometry rules as copy_).
void device_copy(const Tensor& dst, const Tensor& src);
/// fill_ on a GPU tensor.
void device_fill(const Tensor& dst, double value);

}  // namespace longnet::ops
