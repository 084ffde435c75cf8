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

// True when `strides` walk `shape` in plain row-major order (size-1 dims may have any stride).
bool is_dense(const Shape& shape, const int64_t* strides) {
  int64_t expected = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    if (shape[d] == 1) continue;
    if (strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
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
                    StridedOperand saved, StridedOperand dy) {
  const bool dense = is_dense(shape, dx.strides) && is_dense(shape, saved.strides) && is_dense(shape, dy.strides);
  dispatch_float(dy.dtype, "unary_backward", [&]<class T>() {
    T* pdx = static_cast<T*>(dx.data);
    const T* ps = static_cast<const T*>(saved.data);
    const T* pdy = static_cast<const T*>(dy.data);
    const T a = static_cast<T>(s.a), b = static_cast<T>(s.b);
    math::with_unary(op, [&]<UnaryOp OP>() {
      constexpr bool kReads = math::derivative_reads_saved(OP);
      if (dense) {
        parallel_for(numel_of(shape), [&](int64_t i) {
          pdx[i] = math::unary_grad<OP, T>(pdy[i], kReads ? ps[i] : T(0), a, b);
        });
        return;
      }
      for_each_strided<3>(shape, {dx.strides, saved.strides, dy.strides}, [&](const std::array<int64_t, 3>& i) {
        pdx[i[0]] = math::unary_grad<OP, T>(pdy[i[2]], kReads ? ps[i[1]] : T(0), a, b);
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
