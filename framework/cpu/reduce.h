#pragma once
// CPU reduction kernels over the last axis of a contiguous (rows, len) block.
#include <cstdint>

#include "framework/core/dtype.h"

namespace longnet::cpu {

/// Reductions over rows of a contiguous matrix.
enum class RowReduce : uint8_t { Sum, Max, LogSumExp, ArgMax };

/// Parameters of a row reduction: `in` is (rows, len) contiguous; `out` has one value per row
/// (i64 for ArgMax, else the input dtype).
struct RowReduceParams {
  const void* in = nullptr;
  void* out = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t len = 0;
};

/// out[r] = reduce(in[r, :]).
void reduce_rows(RowReduce op, const RowReduceParams& p);

/// Parameters of a sum over the middle axis of a contiguous (outer, len, inner) block: `out` is
/// (outer, inner) contiguous in the input dtype.
struct ColumnSumParams {
  const void* in = nullptr;
  void* out = nullptr;
  DType dtype = DType::F32;
  int64_t outer = 0;
  int64_t len = 0;
  int64_t inner = 0;
};

/// out[o, i] = sum_j in[o, j, i], reading `in` once in memory order (no transposed copy).
void sum_columns(const ColumnSumParams& p);

}  // namespace longnet::cpu
