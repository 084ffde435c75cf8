// CPU-only builds: GPU tensors cannot exist (their storage cannot be allocated), so these are
// reached only through a bug or a stale handle; they fail loudly rather than do nothing.
#ifndef LONGNET_WITH_CUDA
#include "framework/ops/device_copy.h"

namespace longnet::ops {

void device_copy(const Tensor& dst, const Tensor& src) {
  LN_FAIL("[copy_] ", src.device().str(), " -> ", dst.device().str(),
          " needs the CUDA backend (configure with -DLONGNET_CUDA=ON)");
}

void device_fill(const Tensor& dst, double) {
  LN_FAIL("[fill_] ", dst.device().str(), " needs the CUDA backend (configure with -DLONGNET_CUDA=ON)");
}

void device_copy_many(int device, std::span<const FlatCopy>) {
  LN_FAIL("[copy_many_] cuda:", device, " needs the CUDA backend (configure with -DLONGNET_CUDA=ON)");
}

void device_cast_many(int device, DType, DType, std::span<const FlatCast>) {
  LN_FAIL("[cast_many] cuda:", device, " needs the CUDA backend (configure with -DLONGNET_CUDA=ON)");
}

}  // namespace longnet::ops
#endif
