#pragma once
// CPU softmax and log-softmax kernels over the rows of a contiguous (rows, len) block.
#include <cstdint>

#include "framework/core/dtype.h"

namespace longnet::cpu {

/// Forward: `x` and `y` are (rows, len) contiguous in `dtype` (f32 or f64).
struct SoftmaxParams {
  const void* x = nullptr;
  void* y = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t len = 0;
  bool log = false;  // log-softmax instead of softmax
};

/// Backward: `y` is the forward output, `dy` its gradient, `dx` the result; all (rows, len).
struct SoftmaxBackwardParams {
  const void* y = nullptr;
  const void* dy = nullptr;
  void* dx = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t len = 0;
  bool log = false;
};

/// y = softmax(x) or log_softmax(x) per row. A row of all -inf gives 0 (softmax) or -inf
/// (log-softmax) rather than NaN.
void softmax_rows(const SoftmaxParams& p);
/// dx = y * (dy - sum(dy * y)) for softmax, dx = dy - exp(y) * sum(dy) for log-softmax, per row.
void softmax_backward_rows(const SoftmaxBackwardParams& p);

}  // namespace longnet::cpu
