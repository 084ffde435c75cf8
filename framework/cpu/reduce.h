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

}  // namespace longnet::cpu
