// Copies and fills involving GPU tensors: strided conversion kernels on the device (a vectorised
// one for contiguous float casts, batched ones for many small copies or casts), and transfers
// between host and device (staged through contiguous buffers when layouts differ).
#include <algorithm>
#include <utility>

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

// Batched launches over flat members (copies and conversions of contiguous data): each member
// gets whole blocks, of kUnitsPerThread 16-byte units per thread (bytes for a copy, packs of the
// wider dtype for a conversion); a member's last block also does the elements after its last
// whole unit.
constexpr int kCopiesPerLaunch = 64;
constexpr int kUnitsPerThread = 4;
constexpr int64_t kUnitsPerBlock = int64_t(kBlock) * kUnitsPerThread;
// Keeps a launch's grid, and its running block count, within 31 bits.
constexpr int64_t kMaxCopyBlocks = int64_t(1) << 30;

// size: bytes for a copy, elements for a conversion.
struct FlatMember {
  void* dst;
  const void* src;
  int64_t size;
};

struct FlatBatch {
  FlatMember member[kCopiesPerLaunch];
  uint32_t block_end[kCopiesPerLaunch];
  int count;
};

// The blocks a member of `units` whole units takes (at least one, for its tail).
int64_t blocks_for(int64_t units) { return std::max<int64_t>(1, (units + kUnitsPerBlock - 1) / kUnitsPerBlock); }

// This block's share of its member: the member, its units [begin, end), its whole-unit count, and
// whether the block is the member's last (which does the tail).
struct BlockShare {
  const FlatMember* m;
  int64_t begin, end, units;
  bool last;
};

// `per_unit`: the member's size units per 16-byte unit.
__device__ __forceinline__ BlockShare block_share(const FlatBatch& batch, int64_t per_unit) {
  const uint32_t block = blockIdx.x;
  const int i = batch_member(batch, block);
  const FlatMember* m = &batch.member[i];
  const int64_t units = m->size / per_unit;
  const int64_t begin = int64_t(block - batch_first_block(batch, i)) * kUnitsPerBlock;
  const int64_t end = begin + kUnitsPerBlock < units ? begin + kUnitsPerBlock : units;
  return {m, begin, end, units, block + 1 == batch.block_end[i]};
}

__global__ void __launch_bounds__(kBlock) copy_many_kernel(FlatBatch batch) {
  const BlockShare s = block_share(batch, 16);
  char* dst = static_cast<char*>(s.m->dst);
  const char* src = static_cast<const char*>(s.m->src);
  for (int64_t w = s.begin + threadIdx.x; w < s.end; w += blockDim.x) {
    reinterpret_cast<uint4*>(dst)[w] = reinterpret_cast<const uint4*>(src)[w];
  }
  if (s.last) {
    for (int64_t b = s.units * 16 + threadIdx.x; b < s.m->size; b += blockDim.x) dst[b] = src[b];
  }
}

template <class To, class From>
__global__ void __launch_bounds__(kBlock) cast_many_kernel(FlatBatch batch) {
  using Fn = ConvertFn<To, From>;
  const BlockShare s = block_share(batch, Fn::kVec);
  const Fn fn{static_cast<To*>(s.m->dst), static_cast<const From*>(s.m->src)};
  for (int64_t p = s.begin + threadIdx.x; p < s.end; p += blockDim.x) fn.pack(p);
  if (s.last) {
    for (int64_t j = s.units * Fn::kVec + threadIdx.x; j < s.m->size; j += blockDim.x) fn.one(j);
  }
}

// Gathers members into batches (kCopiesPerLaunch members, kMaxCopyBlocks blocks at most) and
// hands each to `launch(batch, blocks)`: when the next member does not fit, and at flush().
template <class Launch>
class BatchLauncher {
 public:
  explicit BatchLauncher(Launch launch) : launch_(std::move(launch)) {}
  /// Adds a member of `blocks` blocks (at most kMaxCopyBlocks).
  void add(const FlatMember& m, int64_t blocks) {
    if (batch_.count == kCopiesPerLaunch || blocks_ + blocks > kMaxCopyBlocks) flush();
    const int i = batch_.count++;
    batch_.member[i] = m;
    blocks_ += blocks;
    batch_.block_end[i] = static_cast<uint32_t>(blocks_);
  }
  /// Launches the members added since the last launch.
  void flush() {
    if (batch_.count == 0) return;
    launch_(batch_, blocks_);
    batch_.count = 0;
    blocks_ = 0;
  }

 private:
  Launch launch_;
  FlatBatch batch_{};
  int64_t blocks_ = 0;
};

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
  BatchLauncher launcher([device](const FlatBatch& batch, int64_t blocks) {
    copy_many_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, stream(device)>>>(batch);
    LN_CUDA_CHECK_LAUNCH();
  });
  for (const FlatCopy& c : copies) {
    if (c.bytes == 0) continue;
    const int64_t need = blocks_for(static_cast<int64_t>(c.bytes / 16));
    if (!aligned16(c.dst) || !aligned16(c.src) || need > kMaxCopyBlocks) {  // unaligned, or huge: on its own
      LN_CUDA_CHECK(cudaMemcpyAsync(c.dst, c.src, c.bytes, cudaMemcpyDeviceToDevice, stream(device)));
      continue;
    }
    launcher.add({c.dst, c.src, static_cast<int64_t>(c.bytes)}, need);
  }
  launcher.flush();
}

void device_cast_many(int device, DType to, DType from, std::span<const FlatCast> casts) {
  using namespace longnet::cuda;
  DeviceGuard guard(device);
  dispatch_float_types(to, "cast_many", [&]<class To>() {
    dispatch_float_types(from, "cast_many", [&]<class From>() {
      BatchLauncher launcher([device](const FlatBatch& batch, int64_t blocks) {
        cast_many_kernel<To, From><<<static_cast<unsigned>(blocks), kBlock, 0, stream(device)>>>(batch);
        LN_CUDA_CHECK_LAUNCH();
      });
      for (const FlatCast& c : casts) {
        if (c.numel == 0) continue;
        LN_CHECK(aligned16(c.dst) && aligned16(c.src), "[cast_many] a batched conversion of ", c.numel,
                 " elements is not 16-byte aligned");
        const int64_t need = blocks_for(c.numel / ConvertFn<To, From>::kVec);
        LN_CHECK(need <= kMaxCopyBlocks, "[cast_many] a conversion of ", c.numel,
                 " elements is too large for one launch");
        launcher.add({c.dst, c.src, c.numel}, need);
      }
      launcher.flush();
    });
  });
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
