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
/// residual + linear(x, weight, bias): residual (..., out) in x's dtype. On a GPU the residual is
/// the GEMM's C (beta 1), so a residual block's add costs no pass of its own; on the CPU it is
/// added to the rounded product, bit for bit add(residual, linear(x, weight, bias)).
Tensor linear_residual(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& residual);
/// In place: out (M, N) = a (M, K) @ b (K, N), or out += a @ b when `accumulate`, written into
/// out's memory (any view with unit column stride, such as rows of a larger tensor). a and b share
/// a float dtype; out has it too, or f32 for bf16/f16 operands (their f32 sums are then stored
/// unrounded). On a GPU one cuBLASLt call writes out (beta 1 when accumulating; no temporary); on
/// the CPU the product is formed in the CPU compute dtype, added to out when accumulating, and
/// rounded once into out. Not recorded by autograd.
void matmul_into(const Tensor& out, const Tensor& a, const Tensor& b, bool accumulate = false);

}  // namespace longnet
