#pragma once
// Matrix products.
#include "framework/core/tensor.h"

namespace longnet {

/// a @ b with NumPy semantics: 1-D operands are promoted (and the added dim removed), batch dims
/// broadcast. (..., M, K) @ (..., K, N) -> (..., M, N). Float dtypes; f32/f64 on CPU use BLAS.
Tensor matmul(const Tensor& a, const Tensor& b);
/// Batched product without broadcasting: (B, M, K) @ (B, K, N) -> (B, M, N).
Tensor bmm(const Tensor& a, const Tensor& b);
/// x @ weight^T + bias: x (..., in), weight (out, in), bias (out) or undefined; all one float dtype.
/// One GEMM over all rows of x (GPU: the bias added in its epilogue); its backward is one GEMM for
/// dx and one for dW, which also yields the bias gradient (GPU: in its epilogue). Saves x and weight.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

}  // namespace longnet
