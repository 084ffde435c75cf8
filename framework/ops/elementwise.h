#pragma once
// Elementwise ops: unary math, broadcasting binary arithmetic, comparisons, selection, and the
// in-place updates optimizers use. All float ops are differentiable.
#include "framework/core/tensor.h"

namespace longnet {

/// Unary elementwise functions (shared by the CPU and CUDA kernels).
enum class UnaryOp : uint8_t {
  Neg, Exp, Log, Sqrt, Rsqrt, Tanh, Sigmoid, Relu, GeluTanh, GeluErf, Silu, Abs, Pow, Clamp,
  AddScalar, MulScalar
};
/// Broadcasting binary functions.
enum class BinaryOp : uint8_t { Add, Sub, Mul, Div, Maximum, Minimum };
/// Comparisons (results are bool).
enum class CompareOp : uint8_t { Eq, Ne, Lt, Le, Gt, Ge };

Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
/// GELU; `approximate_tanh` picks the tanh form (GPT-2, BERT) over the exact erf form.
Tensor gelu(const Tensor& x, bool approximate_tanh = false);
Tensor silu(const Tensor& x);
Tensor abs(const Tensor& x);
/// x ** exponent.
Tensor pow(const Tensor& x, double exponent);
/// min(max(x, lo), hi); the gradient passes where lo <= x <= hi.
Tensor clamp(const Tensor& x, double lo, double hi);
/// x + s and x * s for a scalar s.
Tensor add(const Tensor& x, double s);
Tensor mul(const Tensor& x, double s);

/// a + b, a - b, a * b, a / b with NumPy broadcasting; a and b must share dtype and device.
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
/// Elementwise max / min (ties send the gradient to a).
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);

/// Elementwise comparison with broadcasting; a bool tensor, not differentiable.
Tensor compare(const Tensor& a, const Tensor& b, CompareOp op);
/// Comparison against a scalar.
Tensor compare(const Tensor& a, double s, CompareOp op);

/// cond ? a : b elementwise with broadcasting (cond bool or u8); differentiable in a and b.
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
/// x with `value` where mask is true (mask broadcasts to x).
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

/// In place: a += alpha * b (b broadcasts to a). Not recorded; a must not need grad in grad mode.
void add_(const Tensor& a, const Tensor& b, double alpha = 1.0);
/// In place: a *= s.
void mul_(const Tensor& a, double s);
/// In place: a = 0.
void zero_(const Tensor& a);

Tensor operator-(const Tensor& x);
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double s);
Tensor operator-(const Tensor& a, double s);
Tensor operator*(const Tensor& a, double s);
Tensor operator/(const Tensor& a, double s);
Tensor operator*(double s, const Tensor& a);

}  // namespace longnet
