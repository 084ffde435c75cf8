#pragma once
// Copies and fills that involve a GPU. The CUDA backend provides them; a CPU-only build reports
// that no such device exists.
#include <span>

#include "framework/core/tensor.h"

namespace longnet::ops {

/// copy_ where dst or src is on a GPU (same geometry rules as copy_).
void device_copy(const Tensor& dst, const Tensor& src);
/// fill_ on a GPU tensor.
void device_fill(const Tensor& dst, double value);

/// A copy of `bytes` contiguous bytes between two places on one GPU.
struct FlatCopy {
  void* dst;
  const void* src;
  size_t bytes;
};
/// The flat copies `copies` on GPU `device`, on its stream, in as few launches as their number
/// allows (destinations must not overlap each other or any source).
void device_copy_many(int device, std::span<const FlatCopy> copies);

/// A conversion of `numel` contiguous elements between two places on one GPU, both 16-byte aligned.
struct FlatCast {
  void* dst;
  const void* src;
  int64_t numel;
};
/// The conversions `casts` from float dtype `from` to float dtype `to` on GPU `device`, on its
/// stream, in as few launches as their number allows (destinations must not overlap any source).
void device_cast_many(int device, DType to, DType from, std::span<const FlatCast> casts);

}  // namespace longnet::ops
