#pragma once
// Batched launches: one kernel over several tensors, each given whole blocks so that a block
// never straddles two of them. A batch is passed by value as the kernel's parameters, with
// block_end[i] the number of blocks of tensors 0..i together.
#include <cstdint>

namespace longnet::cuda {

/// The tensor of `batch` whose blocks hold `block`: the first i with block_end[i] > block.
template <class Batch>
__device__ __forceinline__ int batch_member(const Batch& batch, uint32_t block) {
  int lo = 0, hi = batch.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (batch.block_end[mid] <= block) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/// The first block of member i.
template <class Batch>
__device__ __forceinline__ uint32_t batch_first_block(const Batch& batch, int i) {
  return i == 0 ? 0u : batch.block_end[i - 1];
}

}  // namespace longnet::cuda
