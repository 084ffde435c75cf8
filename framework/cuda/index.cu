#include "framework/cuda/index.h"

#include <array>

#include "framework/core/tensor.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/loops.cuh"

namespace longnet::cuda {
namespace {

// The loop geometry of dst, src and index with the indexed operand's stride at `dim` zeroed:
// offsets() then give that operand's position off `dim`, and kernels add index * step.
// `indexed` is 0 (dst: scatter) or 1 (src: gather); *step receives the zeroed stride.
Geometry<3> indexed_geometry(const cpu::IndexParams& p, int indexed, int64_t* step) {
  const size_t nd = p.shape.size();
  std::array<Strides, 3> st = {Strides(p.dst.strides, p.dst.strides + nd),
                               Strides(p.src.strides, p.src.strides + nd),
                               Strides(p.index.strides, p.index.strides + nd)};
  Strides& s = st[static_cast<size_t>(indexed)];
  *step = s[static_cast<size_t>(p.dim)];
  s[static_cast<size_t>(p.dim)] = 0;
  return make_geometry<3>(p.shape, {st[0].data(), st[1].data(), st[2].data()});
}

template <class T, class I>
__global__ void gather_kernel(Geometry<3> g, T* dst, const T* src, const I* idx, int64_t step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t o[3];
    g.offsets(i, o);
    dst[o[0]] = src[o[1] + static_cast<int64_t>(idx[o[2]]) * step];
  }
}

template <class T, class S, class I>
__global__ void scatter_add_kernel(Geometry<3> g, T* dst, const S* src, const I* idx, int64_t step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t o[3];
    g.offsets(i, o);
    atomicAdd(dst + o[0] + static_cast<int64_t>(idx[o[2]]) * step, static_cast<T>(load(src[o[1]])));
  }
}

// Records n - i for a bad id at position i: the maximum marks the first bad position, 0 none.
template <class I>
__global__ void range_check_kernel(const I* ids, int64_t n, int64_t limit, unsigned long long* flag) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = static_cast<int64_t>(ids[i]);
    if (v < 0 || v >= limit) atomicMax(flag, static_cast<unsigned long long>(n - i));
  }
}

}  // namespace

void gather(int device, const cpu::IndexParams& p) {
  int64_t step = 0;
  const Geometry<3> g = indexed_geometry(p, 1, &step);
  if (g.numel == 0) return;
  DeviceGuard guard(device);
  dispatch_index(p.index.dtype, "gather", [&]<class I>() {
    dispatch_all(p.dst.dtype, "gather", [&]<class T>() {
      gather_kernel<T, I><<<grid_for(g.numel), kBlock, 0, stream(device)>>>(
          g, static_cast<T*>(p.dst.data), static_cast<const T*>(p.src.data),
          static_cast<const I*>(p.index.data), step);
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

void scatter_add(int device, const cpu::IndexParams& p) {
  int64_t step = 0;
  const Geometry<3> g = indexed_geometry(p, 0, &step);
  if (g.numel == 0) return;
  DeviceGuard guard(device);
  auto run = [&]<class T, class S>() {
    dispatch_index(p.index.dtype, "scatter_add", [&]<class I>() {
      scatter_add_kernel<T, S, I><<<grid_for(g.numel), kBlock, 0, stream(device)>>>(
          g, static_cast<T*>(p.dst.data), static_cast<const S*>(p.src.data),
          static_cast<const I*>(p.index.data), step);
    });
  };
  const DType d = p.dst.dtype, s = p.src.dtype;
  if (d == DType::F32 && s == DType::F32) {
    run.template operator()<float, float>();
  } else if (d == DType::F32 && s == DType::BF16) {
    run.template operator()<float, BFloat16>();
  } else if (d == DType::F32 && s == DType::F16) {
    run.template operator()<float, Half>();
  } else if (d == DType::F64 && s == DType::F64) {
    run.template operator()<double, double>();
  } else {
    LN_FAIL("[scatter_add] no CUDA kernel adding ", dtype_name(s), " values into a ", dtype_name(d),
            " tensor (f32 or f64 destination expected)");
  }
  LN_CUDA_CHECK_LAUNCH();
}

std::optional<int64_t> first_out_of_range(int device, const void* ids, DType dtype, int64_t n,
                                          int64_t limit) {
  if (n == 0) return std::nullopt;
  DeviceGuard guard(device);
  const cudaStream_t s = stream(device);
  const Tensor flag = Tensor::empty({1}, DType::I64, Device::cuda(device));
  auto* flag_ptr = static_cast<unsigned long long*>(flag.raw_data());
  LN_CUDA_CHECK(cudaMemsetAsync(flag_ptr, 0, sizeof(unsigned long long), s));
  dispatch_index(dtype, "index", [&]<class I>() {
    range_check_kernel<I><<<grid_for(n), kBlock, 0, s>>>(static_cast<const I*>(ids), n, limit, flag_ptr);
  });
  LN_CUDA_CHECK_LAUNCH();
  unsigned long long found = 0;
  LN_CUDA_CHECK(cudaMemcpyAsync(&found, flag_ptr, sizeof found, cudaMemcpyDeviceToHost, s));
  LN_CUDA_CHECK(cudaStreamSynchronize(s));
  if (found == 0) return std::nullopt;
  const int64_t at = n - static_cast<int64_t>(found);
  return dispatch_index(dtype, "index", [&]<class I>() -> std::optional<int64_t> {
    I v{};
    LN_CUDA_CHECK(cudaMemcpyAsync(&v, static_cast<const I*>(ids) + at, sizeof(I), cudaMemcpyDeviceToHost, s));
    LN_CUDA_CHECK(cudaStreamSynchronize(s));
    return static_cast<int64_t>(v);
  });
}

}  // namespace longnet::cuda
