// Copies and fills involving GPU tensors: strided conversion kernels on the device (a vectorised
// one for contiguous float casts), and transfers between host and device (staged through
// contiguous buffers when layouts differ).
#include <algorithm>

#include "framework/cpu/copy.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/batch.cuh"
#include "framework/cuda/device/loops.cuh"
#include "framework/cuda/device/rows.cuh"
#include "framework/cuda/runtime.h"
#include "framework/ops/copy.h"
#include "framework/ops/common.h"
#include "framework/ops/device_copy.h"

namespace longnet::cuda {
namespace {

template <class To, class From>
__global__ void copy_kernel(Geometry<2> g, To* dst, const From* src) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    g.offsets(i, off);
    dst[off[0]] = convert_on_device<To>(src[off[1]]);
  }
}

template <class T>
__global__ void fill_kernel(Geometry<1> g, T* dst, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < g.numel;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    g.offsets(i, off);
    dst[off[0]] = value;
  }
}

// Float conversion of contiguous elements, V at a time (V: the elements in 16 bytes of the wider
// type), without the strided loop's per-element index arithmetic: a cast of a parameter or of its
// gradient in mixed precision.
template <class To, class From>
struct ConvertFn {
  using Wide = std::conditional_t<(sizeof(To) > sizeof(From)), To, From>;
  static constexpr int kVec = Pack<Wide>::kSize;
  To* dst;
  const From* src;

  __device__ void pack(int64_t i) const {
    const rowwise::Vec<From, kVec> in = reinterpret_cast<const rowwise::Vec<From, kVec>*>(src)[i];
    rowwise::Vec<To, kVec> out;
#pragma unroll
    for (int k = 0; k < kVec; ++k) out.v[k] = convert_on_device<To>(in.v[k]);
    reinterpret_cast<rowwise::Vec<To, kVec>*>(dst)[i] = out;
  }
  __device__ void one(int64_t j) const { dst[j] = convert_on_device<To>(src[j]); }
};

// Runs the packed conversion when dst and src are float, contiguous and aligned to their vector
// accesses; false when the strided kernel must do it.
bool convert_packed(int dev, const Geometry<2>& g, const Tensor& dst, const void* src, DType src_dtype) {
  if (!is_flat(g) || !is_floating(dst.dtype()) || !is_floating(src_dtype)) return false;
  bool done = false;
  dispatch_float_types(dst.dtype(), "copy_", [&]<class To>() {
    dispatch_float_types(src_dtype, "copy_", [&]<class From>() {
      using Fn = ConvertFn<To, From>;
      const auto aligned = [](const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; };
      if (!aligned(dst.raw_data(), sizeof(rowwise::Vec<To, Fn::kVec>)) ||
          !aligned(src, sizeof(rowwise::Vec<From, Fn::kVec>))) {
        return;
      }
      const Fn fn{static_cast<To*>(dst.raw_data()), static_cast<const From*>(src)};
      packed_kernel<typename Fn::Wide><<<grid_for(g.numel, Fn::kVec * 4), kBlock, 0, stream(dev)>>>(g.numel, fn);
      LN_CUDA_CHECK_LAUNCH();
      done = true;
    });
  });
  return done;
}

// dst = convert(src) on one device; src strides already broadcast to dst's shape.
void copy_on_device(const Tensor& dst, const void* src, DType src_dtype, const Strides& src_strides) {
  const Geometry<2> g = make_geometry<2>(dst.shape(), {dst.strides().data(), src_strides.data()});
  if (g.numel == 0) return;
  const int dev = dst.device().index;
  DeviceGuard guard(dev);
  if (is_flat(g) && src_dtype == dst.dtype()) {
    LN_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src, g.numel * dtype_size(src_dtype),
                                  cudaMemcpyDeviceToDevice, stream(dev)));
    return;
  }
  if (convert_packed(dev, g, dst, src, src_dtype)) return;
  dispatch_all(dst.dtype(), "copy_", [&]<class To>() {
    dispatch_all(src_dtype, "copy_", [&]<class From>() {
      copy_kernel<To, From><<<grid_for(g.numel), kBlock, 0, stream(dev)>>>(
          g, static_cast<To*>(dst.raw_data()), static_cast<const From*>(src));
    });
  });
  LN_CUDA_CHECK_LAUNCH();
}

// Batched flat copies: 16-byte words, kWordsPerThread per thread of a block; a copy's last block
// also moves the bytes after its last whole word.
constexpr int kCopiesPerLaunch = 64;
constexpr int kWordsPerThread = 4;
constexpr int64_t kWordsPerBlock = int64_t(kBlock) * kWordsPerThread;
// Keeps a launch's grid, and its running block count, within 31 bits.
constexpr int64_t kMaxCopyBlocks = int64_t(1) << 30;

struct CopyBatch {
  char* dst[kCopiesPerLaunch];
  const char* src[kCopiesPerLaunch];
  int64_t bytes[kCopiesPerLaunch];
  uint32_t block_end[kCopiesPerLaunch];
  int count;
};

__global__ void __launch_bounds__(kBlock) copy_many_kernel(CopyBatch batch) {
  const uint32_t block = blockIdx.x;
  const int i = batch_member(batch, block);
  char* dst = batch.dst[i];
  const char* src = batch.src[i];
  const int64_t bytes = batch.bytes[i];
  const int64_t words = bytes / 16;
  const int64_t begin = int64_t(block - batch_first_block(batch, i)) * kWordsPerBlock;
  const int64_t end = begin + kWordsPerBlock < words ? begin + kWordsPerBlock : words;
  for (int64_t w = begin + threadIdx.x; w < end; w += blockDim.x) {
    reinterpret_cast<uint4*>(dst)[w] = reinterpret_cast<const uint4*>(src)[w];
  }
  if (block + 1 == batch.block_end[i]) {
    for (int64_t b = words * 16 + threadIdx.x; b < bytes; b += blockDim.x) dst[b] = src[b];
  }
}

// A contiguous tensor of `shape` holding src broadcast to it, in src's dtype, on src's device.
Tensor dense_on_own_device(const Tensor& src, const Shape& shape) {
  if (src.shape() == shape && src.is_contiguous()) return src;
  Tensor out = Tensor::empty(shape, src.dtype(), src.device());
  copy_(out, src);
  return out;
}

}  // namespace
}  // namespace longnet::cuda

namespace longnet::ops {

void device_copy(const Tensor& dst, const Tensor& src) {
  using namespace longnet::cuda;
  const Shape& shape = dst.shape();
  if (dst.numel() == 0) return;
  if (dst.device() == src.device()) {
    copy_on_device(dst, src.raw_data(), src.dtype(), ops::broadcast_strides(src, shape));
    return;
  }
  // Different devices: move a dense copy of src in its own dtype, then convert/scatter on arrival.
  const Tensor dense = dense_on_own_device(src, shape);
  const size_t bytes = static_cast<size_t>(dense.numel()) * dtype_size(dense.dtype());
  const bool direct = dst.is_contiguous() && dst.dtype() == dense.dtype();
  Tensor landing = direct ? dst : Tensor::empty(shape, dense.dtype(), dst.device());
  if (src.device().is_cpu()) {  // host -> device
    const int dev = dst.device().index;
    DeviceGuard guard(dev);
    LN_CUDA_CHECK(cudaMemcpyAsync(landing.raw_data(), dense.raw_data(), bytes, cudaMemcpyHostToDevice,
                                  stream(dev)));
  } else if (dst.device().is_cpu()) {  // device -> host
    const int dev = src.device().index;
    DeviceGuard guard(dev);
    LN_CUDA_CHECK(cudaMemcpyAsync(landing.raw_data(), dense.raw_data(), bytes, cudaMemcpyDeviceToHost,
                                  stream(dev)));
    LN_CUDA_CHECK(cudaStreamSynchronize(stream(dev)));
  } else {  // device -> device: order after the source's stream, then copy on the destination's
    synchronize(src.device().index);
    DeviceGuard guard(dst.device().index);
    LN_CUDA_CHECK(cudaMemcpyPeerAsync(landing.raw_data(), dst.device().index, dense.raw_data(),
                                      src.device().index, bytes, stream(dst.device().index)));
  }
  if (!direct) copy_(dst, landing);
}

void device_copy_many(int device, std::span<const FlatCopy> copies) {
  using namespace longnet::cuda;
  DeviceGuard guard(device);
  CopyBatch batch{};
  int64_t blocks = 0;
  const auto flush = [&] {
    if (batch.count == 0) return;
    copy_many_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream(device)>>>(batch);
    LN_CUDA_CHECK_LAUNCH();
    batch.count = 0;
    blocks = 0;
  };
  for (const FlatCopy& c : copies) {
    if (c.bytes == 0) continue;
    const int64_t need = std::max<int64_t>(1, (static_cast<int64_t>(c.bytes / 16) + kWordsPerBlock - 1) / kWordsPerBlock);
    if (!aligned16(c.dst) || !aligned16(c.src) || need > kMaxCopyBlocks) {  // unaligned, or huge: on its own
      LN_CUDA_CHECK(cudaMemcpyAsync(c.dst, c.src, c.bytes, cudaMemcpyDeviceToDevice, stream(device)));
      continue;
    }
    if (batch.count == kCopiesPerLaunch || blocks + need > kMaxCopyBlocks) flush();
    const int i = batch.count++;
    batch.dst[i] = static_cast<char*>(c.dst);
    batch.src[i] = static_cast<const char*>(c.src);
    batch.bytes[i] = static_cast<int64_t>(c.bytes);
    blocks += need;
    batch.block_end[i] = static_cast<uint32_t>(blocks);
  }
  flush();
}

void device_fill(const Tensor& dst, double value) {
  using namespace longnet::cuda;
  const Geometry<1> g = make_geometry<1>(dst.shape(), {dst.strides().data()});
  if (g.numel == 0) return;
  const int dev = dst.device().index;
  DeviceGuard guard(dev);
  dispatch_all(dst.dtype(), "fill_", [&]<class T>() {
    fill_kernel<T><<<grid_for(g.numel), kBlock, 0, stream(dev)>>>(g, static_cast<T*>(dst.raw_data()),
                                                                   convert<T>(value));
  });
  LN_CUDA_CHECK_LAUNCH();
}

}  // namespace longnet::ops
