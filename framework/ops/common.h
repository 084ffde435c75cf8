#pragma once
// Helpers the op implementations share: device checks, broadcast geometry, reduced-float upcasts.
#include <initializer_list>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet::ops {

/// Throws naming `op` unless every defined tensor is on the same device; returns that device.
Device common_device(const char* op, std::initializer_list<Tensor> tensors);
/// Throws naming `op` unless `t` has a float dtype.
void require_float(const char* op, const Tensor& t);
/// Throws naming `op` unless a and b have the same dtype.
void require_same_dtype(const char* op, const Tensor& a, const Tensor& b);
/// Strides that read `t` as if broadcast to `shape` (0 on broadcast dims).
Strides broadcast_strides(const Tensor& t, const Shape& shape);
/// The dtype the kernels of t's device take it in: CPU kernels compute 16-bit floats in f32, GPU
/// kernels take every dtype as it is.
DType kernel_dtype(const Tensor& t);
/// `t` converted to kernel_dtype(t) (no copy when already there); not recorded.
Tensor kernel_input(const Tensor& t);
/// The dtype CPU kernels compute `t` in: f32 for 16-bit floats, else t's own.
DType cpu_compute_dtype(DType t);
/// `t` converted to its CPU compute dtype (no copy when already there); not recorded.
Tensor upcast_for_cpu(const Tensor& t);

}  // namespace longnet::ops

/// Runs `cpu_call` for CPU tensors and `cuda_call` for GPU tensors on `device`. CPU-only builds
/// compile the CUDA branch away (GPU tensors cannot exist there).
#ifdef LONGNET_WITH_CUDA
#define LN_ON_DEVICE(device, cpu_call, cuda_call) \
  do {                                             \
    if ((device).is_cuda()) {                      \
      cuda_call;                                   \
    } else {                                       \
      cpu_call;                                    \
    }                                              \
  } while (0)
#else
#define LN_ON_DEVICE(device, cpu_call, cuda_call) \
  do {                                             \
    (void)(device);                                \
    cpu_call;                                      \
  } while (0)
#endif
