#pragma once
// CPU LayerNorm / RMSNorm kernels over the rows of a contiguous (rows, len) block, forward and
// backward fused.
#include <cstdint>

#include "framework/core/dtype.h"

namespace longnet::cpu {

/// Forward: x, y (rows, len); weight, bias (len) or null (then 1 and 0); per-row statistics
/// mean (null for RMSNorm) and rstd (rows). All in `dtype` (f32 or f64).
struct NormParams {
  const void* x = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  void* y = nullptr;
  void* mean = nullptr;
  void* rstd = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t len = 0;
  double eps = 1e-5;
  bool rms = false;   // RMSNorm: no centring, no bias
  bool gelu = false;  // x is a pre-activation: the rows normalised are gelu(x) (erf form)
};

/// Backward: x, dy (rows, len); weight (len) or null; the forward's mean (null for RMSNorm) and
/// rstd. Outputs dx (rows, len), dweight and dbias (len); each output may be null to skip it.
struct NormBackwardParams {
  const void* x = nullptr;
  const void* weight = nullptr;
  const void* mean = nullptr;
  const void* rstd = nullptr;
  const void* dy = nullptr;
  void* dx = nullptr;
  const void* dx_add = nullptr;  // (rows, len) or null: added into dx; may be dx itself (in place)
  void* dweight = nullptr;
  void* dbias = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t len = 0;
  bool rms = false;
  bool gelu = false;  // x is the pre-activation (as in NormParams); dx is the gradient with respect to it
};

/// y = (x - mean) * rstd * weight + bias per row (x * rstd * weight for RMSNorm), statistics
/// accumulated in f64 over the row while it is in cache; saves mean and rstd.
void norm_forward(const NormParams& p);
/// dx, dweight and dbias in one pass over the rows. dweight/dbias sum fixed row chunks into
/// partials and add the partials in order, so results do not depend on the thread count.
void norm_backward(const NormBackwardParams& p);

}  // namespace longnet::cpu
