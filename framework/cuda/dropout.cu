#include "framework/cuda/dropout.h"

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"

namespace longnet::cuda {
namespace {

// Four consecutive elements, moved as one access.
template <class T>
struct alignas(4 * sizeof(T)) Quad {
  T v[4];
};

// Thread c handles elements 4c .. 4c + 3 (row-major), the ones Philox counter offset + c draws
// for. kQuads: out and x are contiguous and aligned for Quad access (the last, partial quad
// still goes element by element). Without kDraw the mask is read instead of drawn.
template <class T, bool kDraw, bool kQuads>
__global__ void dropout_kernel(Geometry<2> g, T* out, const T* x, uint8_t* mask, uint32_t threshold,
                               acc_t<T> scale, uint64_t seed, uint64_t offset) {
  const int64_t n = g.numel, counters = (n + 3) / 4;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < counters;
       c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t first = c * 4;
    bool keep[4];
    if constexpr (kDraw) {
      uint32_t w[4];
      philox_words(seed, offset + static_cast<uint64_t>(c), w);
#pragma unroll
      for (int k = 0; k < 4; ++k) keep[k] = (w[k] >> 8) >= threshold;
    }
    if (kQuads && first + 4 <= n) {
      uchar4 m;
      if constexpr (kDraw) {
        m = make_uchar4(keep[0], keep[1], keep[2], keep[3]);
        *reinterpret_cast<uchar4*>(mask + first) = m;
      } else {
        m = *reinterpret_cast<const uchar4*>(mask + first);
        keep[0] = m.x;
        keep[1] = m.y;
        keep[2] = m.z;
        keep[3] = m.w;
      }
      const Quad<T> in = reinterpret_cast<const Quad<T>*>(x)[c];
      Quad<T> r;
#pragma unroll
      for (int k = 0; k < 4; ++k) r.v[k] = keep[k] ? store<T>(load(in.v[k]) * scale) : store<T>(acc_t<T>(0));
      reinterpret_cast<Quad<T>*>(out)[c] = r;
      continue;
    }
    for (int k = 0; k < 4 && first + k < n; ++k) {
      const int64_t i = first + k;
      if constexpr (kDraw) {
        mask[i] = keep[k];
      } else {
        keep[k] = mask[i] != 0;
      }
      int64_t o[2];
      g.offsets(i, o);
      out[o[0]] = keep[k] ? store<T>(load(x[o[1]]) * scale) : store<T>(acc_t<T>(0));
    }
  }
}

bool aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

void dropout(int device, const cpu::DropoutParams& p) {
  const Geometry<2> g = make_geometry<2>(p.shape, {p.out.strides, p.x.strides});
  if (g.numel == 0) return;
  DeviceGuard guard(device);
  const cudaStream_t s = stream(device);
  const uint32_t threshold = cpu::dropout_threshold(p.p);
  auto run = [&]<class T>() {
    const bool quads = is_flat(g) && aligned_to(p.out.data, sizeof(Quad<T>)) &&
                       aligned_to(p.x.data, sizeof(Quad<T>)) && aligned_to(p.mask, 4);
    const auto scale = static_cast<acc_t<T>>(1.0 / (1.0 - p.p));
    auto launch = [&]<bool kDraw, bool kQuads>() {
      dropout_kernel<T, kDraw, kQuads><<<grid_for((g.numel + 3) / 4), kBlock, 0, s>>>(
          g, static_cast<T*>(p.out.data), static_cast<const T*>(p.x.data), p.mask, threshold, scale, p.seed,
          p.offset);
    };
    if (p.draw_mask) {
      quads ? launch.template operator()<true, true>() : launch.template operator()<true, false>();
    } else {
      quads ? launch.template operator()<false, true>() : launch.template operator()<false, false>();
    }
  };
  switch (p.out.dtype) {
    case DType::F32: run.template operator()<float>(); break;
    case DType::F64: run.template operator()<double>(); break;
    case DType::BF16: run.template operator()<BFloat16>(); break;
    case DType::F16: run.template operator()<Half>(); break;
    default: LN_FAIL("[dropout] expected a float tensor, got ", dtype_name(p.out.dtype));
  }
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::cuda
