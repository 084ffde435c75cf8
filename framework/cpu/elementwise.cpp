#include "framework/cpu/elementwise.h"

#include <cmath>

#include "framework/cpu/loops.h"
#include "framework/ops/elementwise_math.h"

namespace longnet::cpu {
namespace {

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
    math::with_unary(op, [&]<UnaryOp OP>() {
      for_each_strided<2>(shape, {out.strides, x.strides}, [&](const std::array<int64_t, 2>& i) {
        o[i[0]] = math::unary<OP, T>(px[i[1]], a, b);
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
    math::with_unary(op, [&]<UnaryOp OP>() {
      for_each_strided<4>(shape, {dx.strides, x.strides, y.strides, dy.strides},
                          [&](const std::array<int64_t, 4>& i) {
                            pdx[i[0]] = pdy[i[3]] * math::derivative<OP, T>(px[i[1]], py[i[2]], a, b);
                          });
    });
  });
}

void binary(BinaryOp op, const Shape& shape, StridedOperand out, StridedOperand a, StridedOperand b) {
  dispatch_numeric(a.dtype, "binary", [&]<class T>() {
    T* o = static_cast<T*>(out.data);
    const T* pa = static_cast<const T*>(a.data);
    const T* pb = static_cast<const T*>(b.data);
    math::with_binary(op, [&]<BinaryOp OP>() {
      for_each_strided<3>(shape, {out.strides, a.strides, b.strides},
                          [&](const std::array<int64_t, 3>& i) {
                            o[i[0]] = static_cast<T>(math::binary<OP, T>(pa[i[1]], pb[i[2]]));
                          });
    });
  });
}

void compare(CompareOp op, const Shape& shape, StridedOperand out, StridedOperand a, StridedOperand b) {
  dispatch_numeric(a.dtype, "compare", [&]<class T>() {
    bool* o = static_cast<bool*>(out.data);
    const T* pa = static_cast<const T*>(a.data);
    const T* pb = static_cast<const T*>(b.data);
    math::with_compare(op, [&]<CompareOp OP>() {
      for_each_strided<3>(shape, {out.strides, a.strides, b.strides},
                          [&](const std::array<int64_t, 3>& i) {
                            o[i[0]] = math::compare<OP, T>(pa[i[1]], pb[i[2]]);
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
