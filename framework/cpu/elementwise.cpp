#include "framework/cpu/elementwise.h"

#include <cmath>

#include "framework/cpu/loops.h"

namespace longnet::cpu {
namespace {

// Turns a runtime op into a template argument so each loop body is specialised.
template <class Enum, Enum... Ops, class F>
void with_op(Enum op, F&& f) {
  bool done = ((op == Ops ? (f.template operator()<Ops>(), true) : false) || ...);
  LN_CHECK(done, "[elementwise] unknown op ", static_cast<int>(op));
}

template <class F>
void with_unary(UnaryOp op, F&& f) {
  using U = UnaryOp;
  with_op<U, U::Neg, U::Exp, U::Log, U::Sqrt, U::Rsqrt, U::Tanh, U::Sigmoid, U::Relu, U::GeluTanh,
          U::GeluErf, U::Silu, U::Abs, U::Pow, U::Clamp, U::AddScalar, U::MulScalar>(op, f);
}

constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kGeluCoef = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327;

template <UnaryOp OP, class T>
inline T apply_unary(T x, T a, T b) {
  if constexpr (OP == UnaryOp::Neg) return -x;
  if constexpr (OP == UnaryOp::Exp) return std::exp(x);
  if constexpr (OP == UnaryOp::Log) return std::log(x);
  if constexpr (OP == UnaryOp::Sqrt) return std::sqrt(x);
  if constexpr (OP == UnaryOp::Rsqrt) return T(1) / std::sqrt(x);
  if constexpr (OP == UnaryOp::Tanh) return std::tanh(x);
  if constexpr (OP == UnaryOp::Sigmoid) return T(1) / (T(1) + std::exp(-x));
  if constexpr (OP == UnaryOp::Relu) return x > T(0) ? x : T(0);
  if constexpr (OP == UnaryOp::GeluTanh) {
    return T(0.5) * x * (T(1) + std::tanh(T(kSqrt2OverPi) * (x + T(kGeluCoef) * x * x * x)));
  }
  if constexpr (OP == UnaryOp::GeluErf) return T(0.5) * x * (T(1) + std::erf(x * T(kInvSqrt2)));
  if constexpr (OP == UnaryOp::Silu) return x / (T(1) + std::exp(-x));
  if constexpr (OP == UnaryOp::Abs) return std::abs(x);
  if constexpr (OP == UnaryOp::Pow) return std::pow(x, a);
  if constexpr (OP == UnaryOp::Clamp) return x < a ? a : (x > b ? b : x);
  if constexpr (OP == UnaryOp::AddScalar) return x + a;
  if constexpr (OP == UnaryOp::MulScalar) return x * a;
}

// d f(x) / dx, given x and y = f(x).
template <UnaryOp OP, class T>
inline T derivative(T x, T y, T a, T b) {
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
    const T th = std::tanh(inner);
    const T dinner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCoef) * x * x);
    return T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th * th) * dinner;
  }
  if constexpr (OP == UnaryOp::GeluErf) {
    return T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
  }
  if constexpr (OP == UnaryOp::Silu) {
    const T s = T(1) / (T(1) + std::exp(-x));
    return s * (T(1) + x * (T(1) - s));
  }
  if constexpr (OP == UnaryOp::Abs) return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
  if constexpr (OP == UnaryOp::Pow) return a == T(0) ? T(0) : a * std::pow(x, a - T(1));
  if constexpr (OP == UnaryOp::Clamp) return x >= a && x <= b ? T(1) : T(0);
  if constexpr (OP == UnaryOp::AddScalar) return T(1);
  if constexpr (OP == UnaryOp::MulScalar) return a;
}

template <BinaryOp OP, class T>
inline T apply_binary(T a, T b) {
  if constexpr (OP == BinaryOp::Add) return a + b;
  if constexpr (OP == BinaryOp::Sub) return a - b;
  if constexpr (OP == BinaryOp::Mul) return a * b;
  if constexpr (OP == BinaryOp::Div) return a / b;
  if constexpr (OP == BinaryOp::Maximum) return a >= b ? a : b;
  if constexpr (OP == BinaryOp::Minimum) return a <= b ? a : b;
}

template <CompareOp OP, class T>
inline bool apply_compare(T a, T b) {
  if constexpr (OP == CompareOp::Eq) return a == b;
  if constexpr (OP == CompareOp::Ne) return a != b;
  if constexpr (OP == CompareOp::Lt) return a < b;
  if constexpr (OP == CompareOp::Le) return a <= b;
  if constexpr (OP == CompareOp::Gt) return a > b;
  if constexpr (OP == CompareOp::Ge) return a >= b;
}

// Numeric dtypes that arithmetic kernels accept (bool and 16-bit floats are converted by the op).
template <class F>
void dispatch_numeric(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    case DType::I32: return f.template operator()<int32_t>();
    case DType::I64: return f.template operator()<int64_t>();
    case DType::U8: return f.template operator()<uint8_t>();
    default: LN_FAIL("[", op, "] unsupported dtype ", dtype_name(t));
  }
}

}  // namespace

void unary(UnaryOp op, UnaryScalars s, const Shape& shape, StridedOperand out, StridedOperand x) {
  dispatch_float(x.dtype, "unary", [&]<class T>() {
    T* o = static_cast<T*>(out.data);
    const T* px = static_cast<const T*>(x.data);
    const T a = static_cast<T>(s.a), b = static_cast<T>(s.b);
    with_unary(op, [&]<UnaryOp OP>() {
      for_each_strided<2>(shape, {out.strides, x.strides}, [&](const std::array<int64_t, 2>& i) {
        o[i[0]] = apply_unary<OP, T>(px[i[1]], a, b);
      });
    });
  });
}

void unary_backward(UnaryOp op, UnaryScalars s, const Shape& shape, StridedOperand dx,
                    StridedOperand x, StridedOperand y, StridedOperand dy) {
  dispatch_float(x.dtype, "unary_backward", [&]<class T>() {
    T* pdx = static_cast<T*>(dx.data);
    const T* px = static_cast<const T*>(x.data);
    const T* py = static_cast<const T*>(y.data);
    const T* pdy = static_cast<const T*>(dy.data);
    const T a = static_cast<T>(s.a), b = static_cast<T>(s.b);
    with_unary(op, [&]<UnaryOp OP>() {
      for_each_strided<4>(shape, {dx.strides, x.strides, y.strides, dy.strides},
                          [&](const std::array<int64_t, 4>& i) {
                            pdx[i[0]] = pdy[i[3]] * derivative<OP, T>(px[i[1]], py[i[2]], a, b);
                          });
    });
  });
}

void binary(BinaryOp op, const Shape& shape, StridedOperand out, StridedOperand a, StridedOperand b) {
  dispatch_numeric(a.dtype, "binary", [&]<class T>() {
    T* o = static_cast<T*>(out.data);
    const T* pa = static_cast<const T*>(a.data);
    const T* pb = static_cast<const T*>(b.data);
    using B = BinaryOp;
    with_op<B, B::Add, B::Sub, B::Mul, B::Div, B::Maximum, B::Minimum>(op, [&]<BinaryOp OP>() {
      for_each_strided<3>(shape, {out.strides, a.strides, b.strides},
                          [&](const std::array<int64_t, 3>& i) {
                            o[i[0]] = static_cast<T>(apply_binary<OP, T>(pa[i[1]], pb[i[2]]));
                          });
    });
  });
}

void compare(CompareOp op, const Shape& shape, StridedOperand out, StridedOperand a, StridedOperand b) {
  dispatch_numeric(a.dtype, "compare", [&]<class T>() {
    bool* o = static_cast<bool*>(out.data);
    const T* pa = static_cast<const T*>(a.data);
    const T* pb = static_cast<const T*>(b.data);
    using C = CompareOp;
    with_op<C, C::Eq, C::Ne, C::Lt, C::Le, C::Gt, C::Ge>(op, [&]<CompareOp OP>() {
      for_each_strided<3>(shape, {out.strides, a.strides, b.strides},
                          [&](const std::array<int64_t, 3>& i) {
                            o[i[0]] = apply_compare<OP, T>(pa[i[1]], pb[i[2]]);
                          });
    });
  });
}

void where(const Shape& shape, StridedOperand out, StridedOperand cond, StridedOperand a,
           StridedOperand b) {
  dispatch_all(a.dtype, "where", [&]<class T>() {
    T* o = static_cast<T*>(out.data);
    const uint8_t* pc = static_cast<const uint8_t*>(cond.data);  // bool and u8 are one byte
    const T* pa = static_cast<const T*>(a.data);
    const T* pb = static_cast<const T*>(b.data);
    for_each_strided<4>(shape, {out.strides, cond.strides, a.strides, b.strides},
                        [&](const std::array<int64_t, 4>& i) {
                          o[i[0]] = pc[i[1]] ? pa[i[2]] : pb[i[3]];
                        });
  });
}

}  // namespace longnet::cpu
