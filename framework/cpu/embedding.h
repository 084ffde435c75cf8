#pragma once
// CPU kernels for embedding lookup and its deterministic backward.
#include <cstdint>

#include "framework/core/dtype.h"

namespace longnet::cpu {

/// Lookup of n ids (contiguous, i32 or i64, all in [0, V)) in a (V, D) table read with element
/// strides (row_stride, col_stride); `out` is (n, D) contiguous of the table's dtype (any).
struct EmbeddingParams {
  const void* weight = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 1;
  const void* ids = nullptr;
  DType id_dtype = DType::I64;
  void* out = nullptr;
  DType dtype = DType::F32;
  int64_t n = 0;
  int64_t dim = 0;  // D
};

/// out[i, :] = weight[ids[i], :].
void embedding(const EmbeddingParams& p);

/// Backward of a lookup: grad_weight (V, D) contiguous, f32 or f64, fully overwritten;
/// grad_out (n, D) contiguous of the same dtype; ids as in the forward.
struct EmbeddingBackwardParams {
  void* grad_weight = nullptr;
  const void* grad_out = nullptr;
  DType dtype = DType::F32;
  const void* ids = nullptr;
  DType id_dtype = DType::I64;
  int64_t n = 0;
  int64_t vocab = 0;  // V
  int64_t dim = 0;    // D
};

/// grad_weight[v, :] = sum of grad_out[i, :] over i with ids[i] == v, added in increasing i.
/// The ids are bucketed by a stable counting sort and threads split the rows of grad_weight, so
/// the result is bitwise reproducible for any thread count.
void embedding_backward(const EmbeddingBackwardParams& p);

}  // namespace longnet::cpu
