#pragma once
// CPU matrix products through OpenBLAS (CBLAS, row-major).
#include <cstdint>

#include "framework/core/dtype.h"

namespace longnet::cpu {

/// One GEMM operand as BLAS sees it: element (i, j) of the logical matrix lies at
/// data[i * ld + j], or at data[j * ld + i] when `trans` (a transposed view read in place).
struct GemmOperand {
  const void* data = nullptr;
  int64_t ld = 1;
  bool trans = false;
};

/// C = A @ B for `batch` independent products: A (m, k), B (k, n), C (m, n) row-major with
/// leading dim ldc. Batch i uses A at a.data + a_offsets[i] (element offsets; likewise b, c); the
/// offset arrays may be null when batch == 1. dtype is f32 or f64.
struct GemmParams {
  DType dtype = DType::F32;
  int64_t m = 0, n = 0, k = 0;
  GemmOperand a, b;
  void* c = nullptr;
  int64_t ldc = 1;
  int64_t batch = 1;
  const int64_t* a_offsets = nullptr;
  const int64_t* b_offsets = nullptr;
  const int64_t* c_offsets = nullptr;
};

/// Spreads the products (and tiles of each product's C) over OpenMP threads, each making a
/// single-threaded BLAS call; from inside a parallel region it runs on the calling thread. OpenBLAS's
/// own thread pool is set to one thread: its workers and the OpenMP workers, both spinning while
/// idle, would otherwise take cores from each other whenever GEMMs and OpenMP loops alternate.
void gemm(const GemmParams& p);

}  // namespace longnet::cpu
