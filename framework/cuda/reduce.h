#pragma once
// CUDA row reductions; same contract as framework/cpu/reduce.h (plus bf16 and f16 inputs, whose
// results are written in the input dtype after f32 accumulation).
#include "framework/cpu/reduce.h"

namespace longnet::cuda {

/// out[r] = reduce(in[r, :]) on `device`.
void reduce_rows(int device, cpu::RowReduce op, const cpu::RowReduceParams& p);

}  // namespace longnet::cuda
