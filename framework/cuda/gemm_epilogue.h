#pragma once
// The GEMM epilogues as separate kernels, for operands cuBLASLt cannot fuse them on.
#include "framework/cuda/gemm.h"

namespace longnet::cuda {

/// C = beta * C for every batch (C = 0 when beta == 0, whatever it held): the product when K == 0.
void gemm_scale_c(const GemmParams& p);
/// Applies p.epilogue to C, which already holds alpha * op(A) @ op(B) + beta * C (batch == 1).
void gemm_epilogue_unfused(const GemmParams& p);

}  // namespace longnet::cuda
