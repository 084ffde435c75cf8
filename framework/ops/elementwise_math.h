#pragma once
// The scalar math of the elementwise ops, shared by the CPU and CUDA kernels so both compute the
// same functions and derivatives.
#include <cmath>

#include "framework/ops/elementwise.h"

#if defined(__CUDACC__)
#define LN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LN_HOST_DEVICE inline
#endif

namespace longnet::math {

inline constexpr double kSqrt2OverPi = 0.7978845608028654;
inline constexpr double kGeluCoef = 0.044715;
inline constexpr double kInvSqrt2 = 0.7071067811865476;
inline constexpr double kInvSqrt2Pi = 0.3989422804014327;

/// f(x) of a unary op; a and b are its scalars (exponent, clamp bounds, scalar operand).
template <UnaryOp OP, class T>
LN_HOST_DEVICE T unary(T x, T a, T b) {
  using std::erf, std::exp, std::fabs, std::log, std::pow, std::sqrt, std::tanh;
  if constexpr (OP == UnaryOp::Neg) return -x;
  if constexpr (OP == UnaryOp::Exp) return exp(x);
  if constexpr (OP == UnaryOp::Log) return log(x);
  if constexpr (OP == UnaryOp::Sqrt) return sqrt(x);
  if constexpr (OP == UnaryOp::Rsqrt) return T(1) / sqrt(x);
  if constexpr (OP == UnaryOp::Tanh) return tanh(x);
  if constexpr (OP == UnaryOp::Sigmoid) return T(1) / (T(1) + exp(-x));
  if constexpr (OP == UnaryOp::Relu) return x > T(0) ? x : T(0);
  if constexpr (OP == UnaryOp::GeluTanh) {
    return T(0.5) * x * (T(1) + tanh(T(kSqrt2OverPi) * (x + T(kGeluCoef) * x * x * x)));
  }
  if constexpr (OP == UnaryOp::GeluErf) return T(0.5) * x * (T(1) + erf(x * T(kInvSqrt2)));
  if constexpr (OP == UnaryOp::Silu) return x / (T(1) + exp(-x));
  if constexpr (OP == UnaryOp::Abs) return fabs(x);
  if constexpr (OP == UnaryOp::Pow) return pow(x, a);
  if constexpr (OP == UnaryOp::Clamp) return x < a ? a : (x > b ? b : x);
  if constexpr (OP == UnaryOp::AddScalar) return x + a;
  if constexpr (OP == UnaryOp::MulScalar) return x * a;
}

/// d f(x) / dx of a unary op, given x and y = f(x).
template <UnaryOp OP, class T>
LN_HOST_DEVICE T derivative(T x, T y, T a, T b) {
  using std::erf, std::exp, std::pow, std::tanh;
  if constexpr (OP == UnaryOp::Neg) return T(-1);
  if constexpr (OP == UnaryOp::Exp) return y;
  if constexpr (OP == UnaryOp::Log) return T(1) / x;
  if constexpr (OP == UnaryOp::Sqrt) return T(0.5) / y;
  if constexpr (OP == UnaryOp::Rsqrt) return T(-0.5) * y * y * y;
  if constexpr (OP == UnaryOp::Tanh) return T(1) - y * y;
  if constexpr (OP == UnaryOp::Sigmoid) return y * (T(1) - y);
  if constexpr (OP == UnaryOp::Relu) return x > T(0) ? T(1) : T(0);
  if constexpr (OP == UnaryOp::GeluTanh) {
    const T inner = T(kSqrt2OverPi) * (x + T(kGeluCoef) * x * x * x);
    const T th = tanh(inner);
    const T dinner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCoef) * x * x);
    return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * dinner;
  }
  if constexpr (OP == UnaryOp::GeluErf) {
    return T(0.5) * (T(1) + erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * exp(T(-0.5) * x * x);
  }
  if constexpr (OP == UnaryOp::Silu) {
    const T s = T(1) / (T(1) + exp(-x));
    return s * (T(1) + x * (T(1) - s));
  }
  if constexpr (OP == UnaryOp::Abs) return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
  if constexpr (OP == UnaryOp::Pow) return a == T(0) ? T(0) : a * pow(x, a - T(1));
  if constexpr (OP == UnaryOp::Clamp) return x >= a && x <= b ? T(1) : T(0);
  if constexpr (OP == UnaryOp::AddScalar) return T(1);
  if constexpr (OP == UnaryOp::MulScalar) return a;
}

/// Whether derivative<op> reads x (else the backward need not keep the input).
LN_HOST_DEVICE constexpr bool derivative_reads_x(UnaryOp op) {
  return op == UnaryOp::Log || op == UnaryOp::Relu || op == UnaryOp::GeluTanh || op == UnaryOp::GeluErf ||
         op == UnaryOp::Silu || op == UnaryOp::Abs || op == UnaryOp::Pow || op == UnaryOp::Clamp;
}

/// Whether derivative<op> reads y = f(x) (else the backward need not keep the output).
LN_HOST_DEVICE constexpr bool derivative_reads_y(UnaryOp op) {
  return op == UnaryOp::Exp || op == UnaryOp::Sqrt || op == UnaryOp::Rsqrt || op == UnaryOp::Tanh ||
         op == UnaryOp::Sigmoid;
}

/// Whether the backward of op keeps a saved tensor (x or y) at all.
LN_HOST_DEVICE constexpr bool derivative_reads_saved(UnaryOp op) {
  return derivative_reads_x(op) || derivative_reads_y(op);
}

/// dy * f'(x) from the one tensor the backward keeps: `saved` is x for ops whose derivative reads
/// x, y = f(x) for those that read y, and ignored otherwise (no derivative reads both).
template <UnaryOp OP, class T>
LN_HOST_DEVICE T unary_grad(T dy, T saved, T a, T b) {
  static_assert(!(derivative_reads_x(OP) && derivative_reads_y(OP)), "a derivative reads x or y, not both");
  return dy * derivative<OP, T>(saved, saved, a, b);
}

/// a op b.
template <BinaryOp OP, class T>
LN_HOST_DEVICE T binary(T a, T b) {
  if constexpr (OP == BinaryOp::Add) return a + b;
  if constexpr (OP == BinaryOp::Sub) return a - b;
  if constexpr (OP == BinaryOp::Mul) return a * b;
  if constexpr (OP == BinaryOp::Div) return a / b;
  if constexpr (OP == BinaryOp::Maximum) return a >= b ? a : b;
  if constexpr (OP == BinaryOp::Minimum) return a <= b ? a : b;
}

/// a cmp b.
template <CompareOp OP, class T>
LN_HOST_DEVICE bool compare(T a, T b) {
  if constexpr (OP == CompareOp::Eq) return a == b;
  if constexpr (OP == CompareOp::Ne) return a != b;
  if constexpr (OP == CompareOp::Lt) return a < b;
  if constexpr (OP == CompareOp::Le) return a <= b;
  if constexpr (OP == CompareOp::Gt) return a > b;
  if constexpr (OP == CompareOp::Ge) return a >= b;
}

/// Calls f.template operator()<Op>() for the runtime op, so each loop body is specialised.
template <class Enum, Enum... Ops, class F>
void with_op(Enum op, F&& f) {
  const bool done = ((op == Ops ? (f.template operator()<Ops>(), true) : false) || ...);
  LN_CHECK(done, "[elementwise] unknown op ", static_cast<int>(op));
}

/// with_op over every UnaryOp.
template <class F>
void with_unary(UnaryOp op, F&& f) {
  using U = UnaryOp;
  with_op<U, U::Neg, U::Exp, U::Log, U::Sqrt, U::Rsqrt, U::Tanh, U::Sigmoid, U::Relu, U::GeluTanh,
          U::GeluErf, U::Silu, U::Abs, U::Pow, U::Clamp, U::AddScalar, U::MulScalar>(op, f);
}

/// with_op over every BinaryOp.
template <class F>
void with_binary(BinaryOp op, F&& f) {
  using B = BinaryOp;
  with_op<B, B::Add, B::Sub, B::Mul, B::Div, B::Maximum, B::Minimum>(op, f);
}

/// with_op over every CompareOp.
template <class F>
void with_compare(CompareOp op, F&& f) {
  using C = CompareOp;
  with_op<C, C::Eq, C::Ne, C::Lt, C::Le, C::Gt, C::Ge>(op, f);
}

}  // namespace longnet::math
