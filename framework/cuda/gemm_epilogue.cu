// GEMM epilogues as separate kernels: bias, GELU and its gradient elementwise over C, and bias
// gradients as sums along one axis of a strided matrix. Arithmetic in f32 (f64 for f64).
#include "framework/cuda/gemm_epilogue.h"

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"
#include "framework/ops/elementwise_math.h"

namespace longnet::cuda {
namespace {

// Calls f.template operator()<T>() for the float storage type of t (gemm() has checked it is one).
template <class F>
void dispatch_gemm_type(DType t, F&& f) {
  dispatch_all(t, "gemm", [&]<class T>() {
    if constexpr (std::is_floating_point_v<acc_t<T>>) f.template operator()<T>();
  });
}

template <class T>
struct ScaleFn {
  T* c;
  acc_t<T> beta;
  // beta == 0 overwrites, so that NaNs in an uninitialised C do not survive.
  __device__ void operator()(const int64_t (&o)[1]) const {
    c[o[0]] = store<T>(beta == acc_t<T>(0) ? acc_t<T>(0) : beta * load(c[o[0]]));
  }
};

template <class T>
struct BiasActFn {
  T* c;
  const T* bias;
  T* aux;  // pre-activation output, or null
  bool gelu;
  __device__ void operator()(const int64_t (&o)[3]) const {
    const acc_t<T> v = load(c[o[0]]) + load(bias[o[1]]);
    if (aux) aux[o[2]] = store<T>(v);
    c[o[0]] = store<T>(gelu ? math::unary<UnaryOp::GeluTanh>(v, acc_t<T>(0), acc_t<T>(0)) : v);
  }
};

template <class T>
struct DGeluFn {
  T* c;
  const T* aux;
  __device__ void operator()(const int64_t (&o)[2]) const {
    const acc_t<T> x = load(aux[o[1]]);
    const acc_t<T> d = math::derivative<UnaryOp::GeluTanh>(x, x, acc_t<T>(0), acc_t<T>(0));
    c[o[0]] = store<T>(load(c[o[0]]) * d);
  }
};

template <int N, class Fn>
void launch_strided(int device, const Shape& shape, const std::array<const int64_t*, N>& strides, Fn fn) {
  const Geometry<N> g = make_geometry<N>(shape, strides);
  if (g.numel == 0) return;
  strided_kernel<N><<<grid_for(g.numel), kBlock, 0, stream(device)>>>(g, fn);
  LN_CUDA_CHECK_LAUNCH();
}

constexpr int kSumLanes = 32;   // outputs per block, one per lane
constexpr int kSumSlices = 8;   // threads sharing one output

// out[i] = sum over j < len of x[i * si + j * sk], for i < rows. Neighbouring lanes own
// neighbouring outputs, so reads coalesce when si == 1 (column sums of a row-major matrix).
template <class T>
__global__ void sum_kernel(T* out, const T* x, int64_t rows, int64_t len, int64_t si, int64_t sk) {
  __shared__ acc_t<T> part[kSumSlices][kSumLanes + 1];
  const int64_t i = blockIdx.x * int64_t(kSumLanes) + threadIdx.x;
  acc_t<T> s = 0;
  if (i < rows) {
    for (int64_t j = threadIdx.y; j < len; j += kSumSlices) s += load(x[i * si + j * sk]);
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && i < rows) {
    for (int y = 1; y < kSumSlices; ++y) s += part[y][threadIdx.x];
    out[i] = store<T>(s);
  }
}

template <class T>
void launch_sum(int device, T* out, const T* x, int64_t rows, int64_t len, int64_t si, int64_t sk) {
  if (rows == 0) return;
  const auto blocks = static_cast<unsigned>((rows + kSumLanes - 1) / kSumLanes);
  sum_kernel<T><<<blocks, dim3(kSumLanes, kSumSlices), 0, stream(device)>>>(out, x, rows, len, si, sk);
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gemm_scale_c(const GemmParams& p) {
  DeviceGuard guard(p.device);
  dispatch_gemm_type(gemm_c_dtype(p), [&]<class T>() {
    const Strides st{p.stride_c, p.ldc, 1};
    launch_strided<1>(p.device, {p.batch, p.m, p.n}, {st.data()},
                      ScaleFn<T>{static_cast<T*>(p.c), static_cast<acc_t<T>>(p.beta)});
  });
}

void gemm_epilogue_unfused(const GemmParams& p) {
  DeviceGuard guard(p.device);
  dispatch_gemm_type(p.dtype, [&]<class T>() {
    T* c = static_cast<T*>(p.c);
    T* aux = static_cast<T*>(p.aux);
    const Strides c_st{p.ldc, 1}, row_st{0, 1}, aux_st{p.ld_aux, 1};
    switch (p.epilogue) {
      case GemmEpilogue::None:
        return;
      case GemmEpilogue::Bias:
      case GemmEpilogue::BiasGelu: {
        const bool gelu = p.epilogue == GemmEpilogue::BiasGelu;
        launch_strided<3>(p.device, {p.m, p.n}, {c_st.data(), row_st.data(), aux_st.data()},
                          BiasActFn<T>{c, static_cast<const T*>(p.bias), gelu ? aux : nullptr, gelu});
        return;
      }
      case GemmEpilogue::DGeluBGrad:
        launch_strided<2>(p.device, {p.m, p.n}, {c_st.data(), aux_st.data()}, DGeluFn<T>{c, aux});
        if (p.bias_grad) launch_sum<T>(p.device, static_cast<T*>(p.bias_grad), c, p.n, p.m, 1, p.ldc);
        return;
      case GemmEpilogue::BGradA: {
        // op(A)[i][j] is a[i * lda + j], or a[j * lda + i] when A is stored transposed.
        const int64_t si = p.trans_a ? 1 : p.lda, sk = p.trans_a ? p.lda : 1;
        launch_sum<T>(p.device, static_cast<T*>(p.bias_grad), static_cast<const T*>(p.a), p.m, p.k, si, sk);
        return;
      }
    }
  });
}

}  // namespace longnet::cuda
