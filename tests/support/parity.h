#pragma once
// CPU-versus-CUDA parity checks: run the same function on CPU tensors and on their GPU copies,
// compare outputs and the gradients of every input.
#include <vector>

#include "tests/support/gradcheck.h"

namespace longnet::testing {

/// Tolerances of a parity check, by dtype.
struct ParityTolerance {
  double atol;
  double rtol;
};

/// Default tolerances: f32 tight, 16-bit floats at their rounding level, f64 tighter still.
ParityTolerance parity_tolerance(DType dtype);

/// Runs fn on `inputs` (CPU tensors; those of float dtype are cast to `dtype` and made leaves
/// that require grad) and on copies on cuda:0, then back-propagates the same random upstream
/// gradient through both. Succeeds when outputs and all input gradients agree within `tol`.
/// `make_non_contiguous` passes transposed views (of last two dims, if any) instead.
::testing::AssertionResult cpu_cuda_parity(const TensorFn& fn, const std::vector<Tensor>& inputs,
                                           DType dtype, bool differentiate = true,
                                           bool make_non_contiguous = false);

/// Same with explicit tolerances.
::testing::AssertionResult cpu_cuda_parity(const TensorFn& fn, const std::vector<Tensor>& inputs,
                                           DType dtype, ParityTolerance tol, bool differentiate,
                                           bool make_non_contiguous);

}  // namespace longnet::testing
