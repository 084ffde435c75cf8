#pragma once
// CPU kernels for copying and filling strided memory.
#include <cstdint>

#include "framework/core/dtype.h"
#include "framework/core/shape.h"

namespace longnet::cpu {

/// One strided operand of a CPU kernel: a pointer to its first element and its element strides
/// over the loop shape (0 where broadcast).
struct StridedOperand {
  void* data = nullptr;
  DType dtype = DType::F32;
  const int64_t* strides = nullptr;
};

/// dst[i] = convert(src[i]) over `shape`.
void copy(const Shape& shape, StridedOperand dst, StridedOperand src);
/// dst[i] = value over `shape`.
void fill(const Shape& shape, StridedOperand dst, double value);

}  // namespace longnet::cpu
