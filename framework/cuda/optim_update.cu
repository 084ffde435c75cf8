#include "framework/cuda/optim_update.h"

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/rows.cuh"

namespace longnet::cuda {
namespace {

using rowwise::Vec;

// P: storage (and arithmetic) type of the parameter and its state, float or double; G: storage
// type of the gradient. A pack is 16 bytes of P and the same number of gradients (8 bytes for a
// 16-bit gradient of an f32 parameter).
template <class P>
inline constexpr int kVec = Pack<P>::kSize;

template <class P, class G>
using GradVec = Vec<G, kVec<P>>;

template <class P, class G>
__device__ __forceinline__ P grad_at(const G* g, int64_t i) {
  return static_cast<P>(load(g[i]));
}

template <class P, class G>
struct AdamWFn {
  P* p;
  const G* g;
  P* m;
  P* v;
  cpu::AdamWStep<P> step;

  // Offsets: param, grad, exp_avg, exp_avg_sq.
  __device__ void operator()(const int64_t (&o)[4]) const {
    P pv = p[o[0]], mv = m[o[2]], vv = v[o[3]];
    step(pv, grad_at<P>(g, o[1]), mv, vv);
    p[o[0]] = pv, m[o[2]] = mv, v[o[3]] = vv;
  }
  __device__ void one(int64_t i) const {
    P pv = p[i], mv = m[i], vv = v[i];
    step(pv, grad_at<P>(g, i), mv, vv);
    p[i] = pv, m[i] = mv, v[i] = vv;
  }
  __device__ void pack(int64_t i) const {
    Pack<P> pp = reinterpret_cast<const Pack<P>*>(p)[i];
    Pack<P> mm = reinterpret_cast<const Pack<P>*>(m)[i];
    Pack<P> vv = reinterpret_cast<const Pack<P>*>(v)[i];
    const GradVec<P, G> gg = reinterpret_cast<const GradVec<P, G>*>(g)[i];
#pragma unroll
    for (int k = 0; k < kVec<P>; ++k) step(pp.v[k], static_cast<P>(load(gg.v[k])), mm.v[k], vv.v[k]);
    reinterpret_cast<Pack<P>*>(p)[i] = pp;
    reinterpret_cast<Pack<P>*>(m)[i] = mm;
    reinterpret_cast<Pack<P>*>(v)[i] = vv;
  }
};

// buf is null when momentum is 0 (the step then ignores it).
template <class P, class G>
struct SgdFn {
  P* p;
  const G* g;
  P* buf;
  cpu::SgdStep<P> step;

  // Offsets: param, grad, momentum buffer.
  __device__ void operator()(const int64_t (&o)[3]) const {
    P pv = p[o[0]], bv = buf ? buf[o[2]] : P(0);
    step(pv, grad_at<P>(g, o[1]), bv);
    p[o[0]] = pv;
    if (buf) buf[o[2]] = bv;
  }
  __device__ void one(int64_t i) const {
    P pv = p[i], bv = buf ? buf[i] : P(0);
    step(pv, grad_at<P>(g, i), bv);
    p[i] = pv;
    if (buf) buf[i] = bv;
  }
  __device__ void pack(int64_t i) const {
    Pack<P> pp = reinterpret_cast<const Pack<P>*>(p)[i];
    Pack<P> bb{};
    if (buf) bb = reinterpret_cast<const Pack<P>*>(buf)[i];
    const GradVec<P, G> gg = reinterpret_cast<const GradVec<P, G>*>(g)[i];
#pragma unroll
    for (int k = 0; k < kVec<P>; ++k) step(pp.v[k], static_cast<P>(load(gg.v[k])), bb.v[k]);
    reinterpret_cast<Pack<P>*>(p)[i] = pp;
    if (buf) reinterpret_cast<Pack<P>*>(buf)[i] = bb;
  }
};

// f32 parameters take f32, bf16 or f16 gradients; f64 parameters f64 gradients.
template <class F>
void dispatch_param_grad(DType param, DType grad, const char* op, F&& f) {
  if (param == DType::F64 && grad == DType::F64) return f.template operator()<double, double>();
  LN_CHECK(param == DType::F32, "[", op, "] expected f32 or f64 parameters, got ", dtype_name(param),
           " with a ", dtype_name(grad), " gradient");
  switch (grad) {
    case DType::F32: return f.template operator()<float, float>();
    case DType::BF16: return f.template operator()<float, BFloat16>();
    case DType::F16: return f.template operator()<float, Half>();
    default: LN_FAIL("[", op, "] an f32 parameter takes an f32, bf16 or f16 gradient, got ", dtype_name(grad));
  }
}

bool aligned_to(const void* ptr, size_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

// The vectorised kernel when every operand is contiguous over the loop and aligned to its pack
// (null operands are skipped), else the strided one.
template <class P, class G, int N, class Fn>
void launch(int device, const Geometry<N>& geo, const void* grad, std::initializer_list<const void*> states,
            const Fn& fn) {
  if (geo.numel == 0) return;
  bool packed = is_flat(geo) && aligned_to(grad, sizeof(GradVec<P, G>));
  for (const void* s : states) packed = packed && (s == nullptr || aligned16(s));
  DeviceGuard guard(device);
  if (packed) {
    packed_kernel<P><<<grid_for(geo.numel, kVec<P> * 4), kBlock, 0, stream(device)>>>(geo.numel, fn);
  } else {
    strided_kernel<N><<<grid_for(geo.numel), kBlock, 0, stream(device)>>>(geo, fn);
  }
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void adamw_update(int device, const cpu::AdamWScalars& s, const Shape& shape, cpu::StridedOperand param,
                  cpu::StridedOperand grad, cpu::StridedOperand exp_avg, cpu::StridedOperand exp_avg_sq) {
  const Geometry<4> geo =
      make_geometry<4>(shape, {param.strides, grad.strides, exp_avg.strides, exp_avg_sq.strides});
  dispatch_param_grad(param.dtype, grad.dtype, "adamw_update", [&]<class P, class G>() {
    const AdamWFn<P, G> fn{static_cast<P*>(param.data), static_cast<const G*>(grad.data),
                           static_cast<P*>(exp_avg.data), static_cast<P*>(exp_avg_sq.data), cpu::AdamWStep<P>(s)};
    launch<P, G>(device, geo, grad.data, {param.data, exp_avg.data, exp_avg_sq.data}, fn);
  });
}

void sgd_update(int device, const cpu::SgdScalars& s, const Shape& shape, cpu::StridedOperand param,
                cpu::StridedOperand grad, cpu::StridedOperand momentum_buffer) {
  // Without a buffer its strides are the parameter's, so the geometry merges the same dims.
  const int64_t* buf_strides = momentum_buffer.data ? momentum_buffer.strides : param.strides;
  const Geometry<3> geo = make_geometry<3>(shape, {param.strides, grad.strides, buf_strides});
  dispatch_param_grad(param.dtype, grad.dtype, "sgd_update", [&]<class P, class G>() {
    const SgdFn<P, G> fn{static_cast<P*>(param.data), static_cast<const G*>(grad.data),
                         static_cast<P*>(momentum_buffer.data), cpu::SgdStep<P>(s)};
    launch<P, G>(device, geo, grad.data, {param.data, momentum_buffer.data}, fn);
  });
}

}  // namespace longnet::cuda
