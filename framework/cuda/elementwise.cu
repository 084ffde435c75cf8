#include "framework/cuda/elementwise.h"

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"
#include "framework/ops/elementwise_math.h"

namespace longnet::cuda {
namespace {

template <class F>
void dispatch_numeric_types(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::I32: return f.template operator()<int32_t>();
    case DType::I64: return f.template operator()<int64_t>();
    case DType::U8: return f.template operator()<uint8_t>();
    default: return dispatch_float_types(t, op, f);
  }
}

template <UnaryOp OP, class T>
struct UnaryFn {
  T* out;
  const T* x;
  acc_t<T> a, b;
  __device__ void operator()(const int64_t (&o)[2]) const {
    out[o[0]] = store<T>(math::unary<OP>(load(x[o[1]]), a, b));
  }
  __device__ void one(int64_t i) const { out[i] = store<T>(math::unary<OP>(load(x[i]), a, b)); }
  __device__ void pack(int64_t i) const {
    Pack<T> in = reinterpret_cast<const Pack<T>*>(x)[i], r;
#pragma unroll
    for (int k = 0; k < Pack<T>::kSize; ++k) r.v[k] = store<T>(math::unary<OP>(load(in.v[k]), a, b));
    reinterpret_cast<Pack<T>*>(out)[i] = r;
  }
};

// Loads the saved operand only where the derivative reads it, so ops that keep nothing move
// just dy and dx.
template <UnaryOp OP, class T>
struct UnaryBackwardFn {
  static constexpr bool kReads = math::derivative_reads_saved(OP);
  T* dx;
  const T *saved, *dy;
  acc_t<T> a, b;
  __device__ acc_t<T> grad(T g, T v) const {
    return math::unary_grad<OP>(load(g), kReads ? load(v) : acc_t<T>(0), a, b);
  }
  __device__ void operator()(const int64_t (&o)[3]) const {
    dx[o[0]] = store<T>(grad(dy[o[2]], kReads ? saved[o[1]] : T{}));
  }
  __device__ void one(int64_t i) const { dx[i] = store<T>(grad(dy[i], kReads ? saved[i] : T{})); }
  __device__ void pack(int64_t i) const {
    const Pack<T> g = reinterpret_cast<const Pack<T>*>(dy)[i];
    Pack<T> v{}, r;
    if constexpr (kReads) v = reinterpret_cast<const Pack<T>*>(saved)[i];
#pragma unroll
    for (int k = 0; k < Pack<T>::kSize; ++k) r.v[k] = store<T>(grad(g.v[k], v.v[k]));
    reinterpret_cast<Pack<T>*>(dx)[i] = r;
  }
};

template <BinaryOp OP, class T>
struct BinaryFn {
  T* out;
  const T *a, *b;
  __device__ void operator()(const int64_t (&o)[3]) const {
    out[o[0]] = store<T>(math::binary<OP>(load(a[o[1]]), load(b[o[2]])));
  }
  __device__ void one(int64_t i) const { out[i] = store<T>(math::binary<OP>(load(a[i]), load(b[i]))); }
  __device__ void pack(int64_t i) const {
    Pack<T> pa = reinterpret_cast<const Pack<T>*>(a)[i], pb = reinterpret_cast<const Pack<T>*>(b)[i], r;
#pragma unroll
    for (int k = 0; k < Pack<T>::kSize; ++k) r.v[k] = store<T>(math::binary<OP>(load(pa.v[k]), load(pb.v[k])));
    reinterpret_cast<Pack<T>*>(out)[i] = r;
  }
};

template <CompareOp OP, class T>
struct CompareFn {
  bool* out;
  const T *a, *b;
  __device__ void operator()(const int64_t (&o)[3]) const {
    out[o[0]] = math::compare<OP>(load(a[o[1]]), load(b[o[2]]));
  }
};

template <class T>
struct WhereFn {
  T* out;
  const uint8_t* cond;
  const T *a, *b;
  __device__ void operator()(const int64_t (&o)[4]) const { out[o[0]] = cond[o[1]] ? a[o[2]] : b[o[3]]; }
};

template <int N, class Fn>
void launch(int device, const Geometry<N>& g, const Fn& fn) {
  if (g.numel == 0) return;
  DeviceGuard guard(device);
  strided_kernel<N><<<grid_for(g.numel), kBlock, 0, stream(device)>>>(g, fn);
  LN_CUDA_CHECK_LAUNCH();
}

// Contiguous operands with 16-byte alignment take the vectorised kernel.
template <class T, class Fn>
void launch_packed(int device, int64_t n, const Fn& fn) {
  if (n == 0) return;
  DeviceGuard guard(device);
  packed_kernel<T><<<grid_for(n, Pack<T>::kSize * 4), kBlock, 0, stream(device)>>>(n, fn);
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void unary(int device, UnaryOp op, UnaryScalars s, const Shape& shape, StridedOperand out,
           StridedOperand x) {
  const Geometry<2> g = make_geometry<2>(shape, {out.strides, x.strides});
  dispatch_float_types(x.dtype, "unary", [&]<class T>() {
    math::with_unary(op, [&]<UnaryOp OP>() {
      const UnaryFn<OP, T> fn{static_cast<T*>(out.data), static_cast<const T*>(x.data),
                              static_cast<acc_t<T>>(s.a), static_cast<acc_t<T>>(s.b)};
      if (is_flat(g) && aligned16(out.data) && aligned16(x.data)) {
        launch_packed<T>(device, g.numel, fn);
      } else {
        launch(device, g, fn);
      }
    });
  });
}

void unary_backward(int device, UnaryOp op, UnaryScalars s, const Shape& shape, StridedOperand dx,
                    StridedOperand saved, StridedOperand dy) {
  const Geometry<3> g = make_geometry<3>(shape, {dx.strides, saved.strides, dy.strides});
  dispatch_float_types(dy.dtype, "unary_backward", [&]<class T>() {
    math::with_unary(op, [&]<UnaryOp OP>() {
      const UnaryBackwardFn<OP, T> fn{static_cast<T*>(dx.data), static_cast<const T*>(saved.data),
                                      static_cast<const T*>(dy.data), static_cast<acc_t<T>>(s.a),
                                      static_cast<acc_t<T>>(s.b)};
      if (is_flat(g) && aligned16(dx.data) && aligned16(dy.data) && (!fn.kReads || aligned16(saved.data))) {
        launch_packed<T>(device, g.numel, fn);
      } else {
        launch(device, g, fn);
      }
    });
  });
}

void binary(int device, BinaryOp op, const Shape& shape, StridedOperand out, StridedOperand a,
            StridedOperand b) {
  const Geometry<3> g = make_geometry<3>(shape, {out.strides, a.strides, b.strides});
  dispatch_numeric_types(a.dtype, "binary", [&]<class T>() {
    math::with_binary(op, [&]<BinaryOp OP>() {
      const BinaryFn<OP, T> fn{static_cast<T*>(out.data), static_cast<const T*>(a.data),
                               static_cast<const T*>(b.data)};
      if (is_flat(g) && aligned16(out.data) && aligned16(a.data) && aligned16(b.data)) {
        launch_packed<T>(device, g.numel, fn);
      } else {
        launch(device, g, fn);
      }
    });
  });
}

void compare(int device, CompareOp op, const Shape& shape, StridedOperand out, StridedOperand a,
             StridedOperand b) {
  const Geometry<3> g = make_geometry<3>(shape, {out.strides, a.strides, b.strides});
  dispatch_numeric_types(a.dtype, "compare", [&]<class T>() {
    math::with_compare(op, [&]<CompareOp OP>() {
      launch(device, g, CompareFn<OP, T>{static_cast<bool*>(out.data), static_cast<const T*>(a.data),
                                         static_cast<const T*>(b.data)});
    });
  });
}

void where(int device, const Shape& shape, StridedOperand out, StridedOperand cond, StridedOperand a,
           StridedOperand b) {
  const Geometry<4> g = make_geometry<4>(shape, {out.strides, cond.strides, a.strides, b.strides});
  dispatch_all(a.dtype, "where", [&]<class T>() {
    launch(device, g, WhereFn<T>{static_cast<T*>(out.data), static_cast<const uint8_t*>(cond.data),
                                 static_cast<const T*>(a.data), static_cast<const T*>(b.data)});
  });
}

}  // namespace longnet::cuda
