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
  // Storage type S, arithmetic in C: 16-bit floats are read and written as they are (computed in
  // f32 and rounded once), so their backward needs no f32 copies of its operands.
  auto run = [&]<class S, class C>() {
    S* pdx = static_cast<S*>(dx.data);
    const S* ps = static_cast<const S*>(saved.data);
    const S* pdy = static_cast<const S*>(dy.data);
    const C a = static_cast<C>(s.a), b = static_cast<C>(s.b);
    math::with_unary(op, [&]<UnaryOp OP>() {
      constexpr bool kReads = math::derivative_reads_saved(OP);
      const auto grad = [&](int64_t out, int64_t in, int64_t g) {
        const C v = kReads ? static_cast<C>(ps[in]) : C(0);
        pdx[out] = static_cast<S>(math::unary_grad<OP, C>(static_cast<C>(pdy[g]), v, a, b));
      };
      if (dense) {
        parallel_for(numel_of(shape), [&](int64_t i) { grad(i, i, i); });
      } else {
        for_each_strided<3>(shape, {dx.strides, saved.strides, dy.strides},
                            [&](const std::array<int64_t, 3>& i) { grad(i[0], i[1], i[2]); });
      }
    });
  };
  switch (dy.dtype) {
    case DType::F32: return run.template operator()<float, float>();
    case DType::F64: return run.template operator()<double, double>();
    case DType::BF16: return run.template operator()<BFloat16, float>();
    case DType::F16: return run.template operator()<Half, float>();
    default: LN_FAIL("[unary_backward] expected a float tensor, got ", dtype_name(dy.dtype));
  }
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
