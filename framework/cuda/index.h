#pragma once
// CUDA kernels for indexing along one dim; same parameter structs and loop contract as
// framework/cpu/index.h. Operands live on `device`.
#include <cstdint>
#include <optional>

#include "framework/cpu/index.h"

namespace longnet::cuda {

/// dst[p] = src[p with p[dim] replaced by index[p]]; any dtype shared by dst and src.
void gather(int device, const cpu::IndexParams& p);

/// dst[p with p[dim] replaced by index[p]] += src[p]. dst is f32 or f64; src has dst's dtype, or
/// is bf16/f16 with an f32 dst (16-bit values are accumulated in f32, as the CPU path does after
/// its upcast). Contributions are added with float atomics, so the order in which one element
/// receives them is unspecified: unlike the CPU kernel, results may differ from run to run in the
/// last bits (they agree with the CPU up to rounding).
void scatter_add(int device, const cpu::IndexParams& p);

/// The first (lowest position) of `n` contiguous ids (i32 or i64) on `device` outside
/// [0, limit), or nullopt when all are in range. Synchronises with the device's stream: the
/// answer comes back with one 8-byte device-to-host copy (and one more for the offending id).
std::optional<int64_t> first_out_of_range(int device, const void* ids, DType dtype, int64_t n,
                                          int64_t limit);

}  // namespace longnet::cuda
