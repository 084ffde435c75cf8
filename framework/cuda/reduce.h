#pragma once
// CUDA row reductions; same contract as framework/cpu/reduce.h (plus bf16 and f16 inputs, whose
// results are written in the input dtype after f32 accumulation).
#include "framework/cpu/reduce.h"

namespace longnet::cuda {

/// out[r] = reduce(in[r, :]) on `device`.
void reduce_rows(int device, cpu::RowReduce op, const cpu::RowReduceParams& p);

/// out[o, i] = sum_j in[o, j, i] on `device` (cpu::sum_columns' contract, plus bf16 and f16 with
/// f32 accumulation). Reads `in` once with coalesced (16-byte where aligned) row accesses; long
/// columns are split over blocks whose partial sums a second small pass adds, in a fixed order.
void sum_columns(int device, const cpu::ColumnSumParams& p);

}  // namespace longnet::cuda
