#include "framework/cuda/loss.h"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

#include "framework/core/storage.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/rows.cuh"

namespace longnet::cuda {
namespace {

using rowwise::Vec;

constexpr int kMaxThreads = 512;
constexpr int kFinalThreads = 1024;

// Packs a thread loads together before using any: their loads are in flight at once (the
// compiler keeps a load behind the branches of the online max, and behind stores that may alias).
constexpr int kBatch = 4;

// f(b, p) for p = p0 + b * blockDim.x below `packs`, b < kBatch.
template <class F>
__device__ __forceinline__ void for_batch(int64_t p0, int64_t packs, F&& f) {
#pragma unroll
  for (int b = 0; b < kBatch; ++b) {
    const int64_t p = p0 + int64_t(b) * blockDim.x;
    if (p < packs) f(b, p);
  }
}

// A row of n elements starting at `row`, split for 16-byte packs: `head` elements up to the first
// aligned one, then `packs` whole packs of V, then the rest. Rows of a vocabulary such as 50257
// start at every alignment, so each row gets its own split.
template <class T, int V>
struct Split {
  int64_t misaligned, head, packs;  // misaligned: elements from the last 16-byte boundary to `row`
  __device__ __forceinline__ Split(const T* row, int64_t n)
      : misaligned(static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) / sizeof(T) % V)),
        head(min(n, (V - misaligned) % V)),
        packs((n - head) / V) {}
};

// Running max m and sum s of exp(x - m) over the values seen. A pack's values are compared with
// m first: s is rescaled (one accurate exponential) only when the max grows, which past the
// first packs of a row is rare; each value then costs one fast exponential. A NaN makes s NaN.
template <class A>
struct OnlineLse {
  A m = rowwise::minus_inf<A>();
  A s = 0;
  rowwise::ExpMinus<A> ex{rowwise::minus_inf<A>()};

  template <int N>
  __device__ __forceinline__ void add(const A (&v)[N]) {
    A pm = v[0];
#pragma unroll
    for (int e = 1; e < N; ++e) pm = rowwise::nan_max(pm, v[e]);
    if (pm > m || pm != pm) {
      // Nothing to rescale while the max is -inf (and -inf - -inf would be NaN).
      s = m == rowwise::minus_inf<A>() ? A(0) : s * rowwise::exp_of(m - pm);
      m = pm;
      ex = rowwise::ExpMinus<A>(m);
    }
#pragma unroll
    for (int e = 0; e < N; ++e) s += ex(v[e]);
  }
  __device__ __forceinline__ void add(A v) {
    const A one[1] = {v};
    add(one);
  }
  // s expressed relative to a larger max M.
  __device__ __forceinline__ A scaled_to(A M) const {
    return m == rowwise::minus_inf<A>() ? A(0) : s * rowwise::exp_of(m - M);
  }
};

// True when target t of a row that is not ignored names no class.
__device__ __forceinline__ bool bad_target(int64_t t, int64_t classes) { return t < 0 || t >= classes; }

// What row_lse does with the values it reads besides summing them: nothing (the forward), or
// keep the row in shared memory for a second pass (KeepInShared).
struct KeepNothing {
  template <class T>
  __device__ __forceinline__ void element(int64_t, T) const {}
  template <class W>
  __device__ __forceinline__ void pack(int64_t, const W&) const {}
};

// Keeps a row in shared memory with element j at copy[j], `copy` lying as far past a 16-byte
// boundary as the row does in global memory: the row's aligned packs are aligned there too, and
// a second pass takes the row's own head/packs/tail split.
template <class T, int V>
struct KeepInShared {
  T* copy;
  int64_t head;
  __device__ __forceinline__ void element(int64_t j, T v) const { copy[j] = v; }
  __device__ __forceinline__ void pack(int64_t p, const rowwise::PackBits<T, V>& w) const {
    reinterpret_cast<rowwise::PackBits<T, V>*>(copy + head)[p] = w;
  }
};

// max + log(sum exp(x - max)) of a row's first `classes` elements in a single read, every value
// also handed to `keep`. All threads of the block call it and get the same value; each thread
// sums its head element, then its packs in increasing order, then its tail element, and the
// block's reduction tree is fixed: the result depends on the block size alone.
template <class T, int V, class Keep>
__device__ __forceinline__ acc_t<T> row_lse(const T* row, const Split<T, V>& split, int64_t classes, acc_t<T>* scratch,
                                            const Keep& keep) {
  using A = acc_t<T>;
  OnlineLse<A> acc;
  auto one = [&](int64_t j) {
    const T v = row[j];
    keep.element(j, v);
    acc.add(load(v));
  };
  for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x) one(j);
  const auto* body = reinterpret_cast<const rowwise::PackBits<T, V>*>(row + split.head);
  for (int64_t p0 = threadIdx.x; p0 < split.packs; p0 += kBatch * blockDim.x) {
    rowwise::PackBits<T, V> raw[kBatch];
    for_batch(p0, split.packs, [&](int b, int64_t p) { raw[b] = body[p]; });
    for_batch(p0, split.packs, [&](int b, int64_t p) {
      keep.pack(p, raw[b]);
      A v[V];
      rowwise::unpack<T, V>(raw[b], v);
      acc.add(v);
    });
  }
  for (int64_t j = split.head + split.packs * V + threadIdx.x; j < classes; j += blockDim.x) one(j);
  const A m = rowwise::block_reduce(acc.m, scratch, rowwise::MaxOp{}, rowwise::minus_inf<A>());
  const A s = rowwise::block_reduce(acc.scaled_to(m), scratch, rowwise::SumOp{}, A(0));
  return m + rowwise::log_of(s);
}

// One block per row: lse = max + log(sum exp(x - max)) in a single read of the row's first
// `classes` elements (rows start `ld` elements apart), and the row's loss lse - x[target] (NaN for
// a bad target). Ignored rows are not read and get 0 for both.
template <class T, class I, int V>
__global__ void __launch_bounds__(kMaxThreads)
    cross_entropy_forward_kernel(const T* logits, const I* targets, acc_t<T>* lse, acc_t<T>* row_loss, int64_t rows,
                                 int64_t classes, int64_t ld, int64_t ignore_index) {
  using A = acc_t<T>;
  __shared__ A scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    if (t == ignore_index) {
      if (threadIdx.x == 0) lse[r] = row_loss[r] = A(0);
      continue;
    }
    const T* row = logits + r * ld;
    const A l = row_lse(row, Split<T, V>(row, classes), classes, scratch, KeepNothing{});
    if (threadIdx.x == 0) {
      lse[r] = l;
      row_loss[r] = bad_target(t, classes) ? static_cast<A>(NAN) : l - load(row[t]);
    }
  }
}

// One block: the mean of the row losses over counted rows (each thread sums its rows in order,
// then a fixed tree: deterministic), their count, and the first bad target. The loss is NaN when
// any target is bad; bad rows are not counted. Without row_loss only the count is formed (loss and
// bad are then not written and may be null).
template <class T, class I>
__global__ void __launch_bounds__(kFinalThreads)
    cross_entropy_finish_kernel(const I* targets, const acc_t<T>* row_loss, int64_t rows, int64_t classes,
                                int64_t ignore_index, acc_t<T>* loss, int64_t* count, int64_t* bad) {
  using A = acc_t<T>;
  __shared__ double sum_scratch[32];
  __shared__ int64_t int_scratch[32];
  constexpr int64_t kNone = INT64_MAX;
  double sum = 0.0;
  int64_t n = 0, first_bad = kNone;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    if (t == ignore_index) continue;
    if (bad_target(t, classes)) {
      first_bad = min(first_bad, r);
      continue;
    }
    ++n;
    if (row_loss) sum += static_cast<double>(row_loss[r]);
  }
  sum = rowwise::block_reduce(sum, sum_scratch, rowwise::SumOp{}, 0.0);
  n = rowwise::block_reduce(n, int_scratch, rowwise::SumOp{}, int64_t(0));
  first_bad = rowwise::block_reduce(first_bad, int_scratch, rowwise::MinOp{}, kNone);
  if (threadIdx.x == 0) {
    *count = n;
    if (!row_loss) return;
    *loss = first_bad != kNone ? static_cast<A>(NAN) : n ? static_cast<A>(sum / static_cast<double>(n)) : A(0);
    bad[0] = first_bad == kNone ? -1 : first_bad;
    bad[1] = first_bad == kNone ? 0 : static_cast<int64_t>(targets[first_bad]);
  }
}

// grad / count (grad null: 1), 0 when no row is counted.
template <class A>
__device__ __forceinline__ A gradient_scale(const A* grad, const int64_t* count) {
  const int64_t n = *count;
  return n ? (grad ? *grad : A(1)) / static_cast<A>(n) : A(0);
}

// A row's gradient (exp(x - lse) - onehot(t)) * scale, written to `out` as `in` is read (in may
// be out): exp(x - lse) costs one FFMA and one MUFU.EX2, and the one-hot term touches only the
// pack holding the target. A row that is not live is written as `fill` without reading `in`.
// Only the first `classes` elements are touched; in and out both follow `split` (the same
// offset modulo 16 bytes).
template <class T, int V>
__device__ __forceinline__ void gradient_row(const T* in, T* out, const Split<T, V>& split, int64_t classes, int64_t t,
                                             bool live, acc_t<T> fill, acc_t<T> lse, acc_t<T> scale) {
  using A = acc_t<T>;
  const rowwise::ExpMinus<A> ex(lse);
  auto grad_of = [&](int64_t j) { return live ? (ex(load(in[j])) - (j == t ? A(1) : A(0))) * scale : fill; };
  for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x) out[j] = store<T>(grad_of(j));
  const auto* body_in = reinterpret_cast<const rowwise::PackBits<T, V>*>(in + split.head);
  auto* body_out = reinterpret_cast<Vec<T, V>*>(out + split.head);
  for (int64_t p0 = threadIdx.x; p0 < split.packs; p0 += kBatch * blockDim.x) {
    rowwise::PackBits<T, V> raw[kBatch];
    if (live) for_batch(p0, split.packs, [&](int b, int64_t p) { raw[b] = body_in[p]; });
    for_batch(p0, split.packs, [&](int b, int64_t p) {
      A o[V];
      if (live) {
        rowwise::unpack<T, V>(raw[b], o);
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = ex(o[e]) * scale;
        const int64_t hit = t - (split.head + p * V);  // the target's place in this pack
        if (hit >= 0 && hit < V) {
#pragma unroll
          for (int e = 0; e < V; ++e) o[e] -= e == hit ? scale : A(0);
        }
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) o[e] = fill;
      }
      body_out[p] = rowwise::to_pack<T, V>(o);
    });
  }
  for (int64_t j = split.head + split.packs * V + threadIdx.x; j < classes; j += blockDim.x) {
    out[j] = store<T>(grad_of(j));
  }
}

// 0 for an ignored row's gradient, NaN for a bad target's.
template <class A>
__device__ __forceinline__ A fill_of(bool ignored) {
  return ignored ? A(0) : static_cast<A>(NAN);
}

// One block per row: dlogits = (exp(x - lse) - onehot) * grad / count, written as the row is
// read. Ignored rows are written as 0 and rows with a bad target as NaN, without reading the
// logits. Rows start `ld` elements apart in both, and only their first `classes` elements are
// touched. logits and dlogits share their offset modulo 16 bytes (checked at launch, and kept
// from row to row by the common stride), so one split serves both.
template <class T, class I, int V>
__global__ void __launch_bounds__(kMaxThreads)
    cross_entropy_backward_kernel(const T* logits, const I* targets, const acc_t<T>* lse, T* dlogits, int64_t rows,
                                  int64_t classes, int64_t ld, int64_t ignore_index, const acc_t<T>* grad,
                                  const int64_t* count) {
  using A = acc_t<T>;
  const A scale = gradient_scale(grad, count);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    const bool ignored = t == ignore_index;
    const bool live = !ignored && !bad_target(t, classes);
    const T* in = logits + r * ld;
    gradient_row(in, dlogits + r * ld, Split<T, V>(in, classes), classes, t, live, fill_of<A>(ignored),
                 live ? lse[r] : A(0), scale);
  }
}

// Blocks of the fused kernel a multiprocessor must be able to run at once as far as registers go
// (2: 64 a thread at 512 threads): two 16-bit rows of the 50257-class head (100.5 KB each) fit an
// H100's 228 KB of shared memory. f64 rows of more than 14K classes fit one at a time, and at 64
// registers its kernel would spill.
template <class T>
inline constexpr int kFusedBlocks = sizeof(T) == 8 ? 1 : 2;

// cross_entropy_forward_kernel, then cross_entropy_backward_kernel with grad 1, in one read of
// each row: as row_lse reads the row it keeps it in shared memory (dynamic, (classes + V - 1)
// elements rounded up to whole packs, the row lying as misaligned there as in global memory),
// and the gradient pass reads it from there. Same block size, same reads in the same order, same
// arithmetic: lse, row losses and gradients are bit for bit those of the two kernels. A row with
// a bad target is read for its lse (as the forward does) and written as NaN; an ignored row is not
// read, its lse and loss are 0 and its gradient 0. dlogits may be logits (in place): every
// thread has read the row before the reductions end.
template <class T, class I, int V>
__global__ void __launch_bounds__(kMaxThreads, kFusedBlocks<T>)
    cross_entropy_fused_kernel(const T* logits, const I* targets, acc_t<T>* lse, acc_t<T>* row_loss, T* dlogits,
                               int64_t rows, int64_t classes, int64_t ld, int64_t ignore_index, const int64_t* count) {
  using A = acc_t<T>;
  extern __shared__ uint4 held[];  // 16-byte aligned
  __shared__ A scratch[32];
  const A scale = gradient_scale<A>(nullptr, count);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    const bool ignored = t == ignore_index;
    const T* row = logits + r * ld;
    const Split<T, V> split(row, classes);
    T* copy = reinterpret_cast<T*>(held) + split.misaligned;
    A l = 0;
    if (!ignored) {
      __syncthreads();  // every thread is done with the previous row's copy
      l = row_lse(row, split, classes, scratch, KeepInShared<T, V>{copy, split.head});
    }
    const bool live = !ignored && !bad_target(t, classes);
    if (threadIdx.x == 0) {
      lse[r] = l;
      row_loss[r] = live ? l - load(copy[t]) : fill_of<A>(ignored);
    }
    gradient_row(copy, dlogits + r * ld, split, classes, t, live, fill_of<A>(ignored), live ? l : A(0), scale);
  }
}

// Enough threads for about four packs each, within [64, kMaxThreads].
int threads_for(int64_t classes, int vec) {
  const int64_t want = (classes / vec + 3) / 4;
  return static_cast<int>(std::clamp<int64_t>((want + 31) / 32 * 32, 64, kMaxThreads));
}

unsigned blocks_for(int64_t rows) { return static_cast<unsigned>(std::clamp<int64_t>(rows, 1, rowwise::kMaxGrid)); }

// Dynamic shared bytes `kernel` may take a block on `device`: the opt-in maximum less its static
// shared memory. The first call for a kernel and device raises the kernel's limit to that (CUDA
// keeps it per device); later calls find it in a cache. `device` is current.
int64_t dynamic_shared_limit(int device, const void* kernel) {
  struct Entry {
    const void* kernel;
    int device;
    int64_t bytes;
  };
  static std::mutex mutex;
  static std::vector<Entry> cache;
  std::lock_guard<std::mutex> lock(mutex);
  for (const Entry& e : cache) {
    if (e.kernel == kernel && e.device == device) return e.bytes;
  }
  int optin = 0;
  LN_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cudaFuncAttributes attr{};
  LN_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  const int64_t bytes = std::max<int64_t>(0, int64_t{optin} - static_cast<int64_t>(attr.sharedSizeBytes));
  LN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  cache.push_back({kernel, device, bytes});
  return bytes;
}

// Shared bytes the fused kernel holds a row of `classes` elements of T in: room for the row at
// any misalignment (up to V - 1 elements), in whole 16-byte packs.
template <class T, int V>
int64_t fused_row_bytes(int64_t classes) {
  return (classes + 2 * (V - 1)) / V * 16;
}

// The fused kernel for T and I, and the most classes it takes on `device` (current): the
// largest count whose row fits its shared memory limit at any alignment.
template <class T, class I>
auto fused_kernel(int device) {
  constexpr int V = rowwise::kVecWidth<T>;
  const auto kernel = cross_entropy_fused_kernel<T, I, V>;
  const int64_t limit = dynamic_shared_limit(device, reinterpret_cast<const void*>(kernel));
  return std::pair{kernel, std::max<int64_t>(0, limit / 16 * V - (V - 1))};
}

constexpr int kScaleThreads = 256;

// out[i] = in[i] * g over n elements, rounded once to T. In place (in == out) with g == 1 every
// block returns at once: the common upstream gradient of a loss costs no pass over the data.
template <class In, class T>
__global__ void __launch_bounds__(kScaleThreads)
    scale_gradient_kernel(const In* in, T* out, int64_t n, const acc_t<T>* grad) {
  using A = acc_t<T>;
  const A g = *grad;
  if (g == A(1) && static_cast<const void*>(in) == static_cast<const void*>(out)) return;
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    out[i] = store<T>(static_cast<A>(load(in[i])) * g);
  }
}

}  // namespace

void cross_entropy_rows(int device, const cpu::CrossEntropyParams& p, void* row_loss) {
  if (p.rows == 0) return;
  const int64_t ld = cpu::row_stride(p);
  DeviceGuard guard(device);
  dispatch_float_types(p.dtype, "cross_entropy", [&]<class T>() {
    dispatch_index(p.target_dtype, "cross_entropy", [&]<class I>() {
      using A = acc_t<T>;
      // Any alignment works: each row finds its own aligned middle.
      constexpr int V = rowwise::kVecWidth<T>;
      cross_entropy_forward_kernel<T, I, V><<<blocks_for(p.rows), threads_for(p.classes, V), 0, stream(device)>>>(
          static_cast<const T*>(p.logits), static_cast<const I*>(p.targets), static_cast<A*>(p.lse),
          static_cast<A*>(row_loss), p.rows, p.classes, ld, p.ignore_index);
      LN_CUDA_CHECK_LAUNCH();
    });
  });
}

void cross_entropy_finish(int device, const cpu::CrossEntropyParams& p, const void* row_loss,
                          const CrossEntropyOutputs& out) {
  DeviceGuard guard(device);
  dispatch_float_types(p.dtype, "cross_entropy", [&]<class T>() {
    dispatch_index(p.target_dtype, "cross_entropy", [&]<class I>() {
      using A = acc_t<T>;
      cross_entropy_finish_kernel<T, I><<<1, kFinalThreads, 0, stream(device)>>>(
          static_cast<const I*>(p.targets), static_cast<const A*>(row_loss), p.rows, p.classes, p.ignore_index,
          static_cast<A*>(out.loss), out.count, out.bad);
      LN_CUDA_CHECK_LAUNCH();
    });
  });
}

void cross_entropy_count(int device, const cpu::CrossEntropyParams& p, int64_t* count) {
  cross_entropy_finish(device, p, nullptr, {nullptr, count, nullptr});
}

void scale_gradient(int device, const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                    const void* grad) {
  if (n == 0) return;
  LN_CHECK(in_dtype == out_dtype || (in_dtype == DType::F32 && is_reduced_float(out_dtype)),
           "[linear_cross_entropy] cannot scale a ", dtype_name(in_dtype), " gradient into ", dtype_name(out_dtype));
  DeviceGuard guard(device);
  dispatch_float_types(out_dtype, "linear_cross_entropy", [&]<class T>() {
    const auto blocks = static_cast<unsigned>(std::clamp<int64_t>((n + kScaleThreads - 1) / kScaleThreads, 1,
                                                                  rowwise::kMaxGrid));
    const auto* g = static_cast<const acc_t<T>*>(grad);
    if (in_dtype == out_dtype) {
      scale_gradient_kernel<T, T><<<blocks, kScaleThreads, 0, stream(device)>>>(static_cast<const T*>(in),
                                                                                static_cast<T*>(out), n, g);
    } else {
      scale_gradient_kernel<acc_t<T>, T><<<blocks, kScaleThreads, 0, stream(device)>>>(
          static_cast<const acc_t<T>*>(in), static_cast<T*>(out), n, g);
    }
    LN_CUDA_CHECK_LAUNCH();
  });
}

void cross_entropy_forward(int device, const cpu::CrossEntropyParams& p, const CrossEntropyOutputs& out) {
  // Per-row losses, freed in stream order once the finishing kernel is queued.
  const size_t loss_size = p.dtype == DType::F64 ? sizeof(double) : sizeof(float);
  const Storage row_loss(static_cast<size_t>(std::max<int64_t>(p.rows, 1)) * loss_size, Device::cuda(device));
  cross_entropy_rows(device, p, row_loss.data());
  cross_entropy_finish(device, p, row_loss.data(), out);
}

void cross_entropy_backward(int device, const cpu::CrossEntropyBackwardParams& p, const void* grad,
                            const int64_t* count) {
  if (p.rows == 0 || p.classes == 0) return;
  const int64_t ld = cpu::row_stride(p);
  DeviceGuard guard(device);
  dispatch_float_types(p.dtype, "cross_entropy_backward", [&]<class T>() {
    dispatch_index(p.target_dtype, "cross_entropy_backward", [&]<class I>() {
      using A = acc_t<T>;
      auto launch = [&]<int V>() {
        cross_entropy_backward_kernel<T, I, V><<<blocks_for(p.rows), threads_for(p.classes, V), 0, stream(device)>>>(
            static_cast<const T*>(p.logits), static_cast<const I*>(p.targets), static_cast<const A*>(p.lse),
            static_cast<T*>(p.dlogits), p.rows, p.classes, ld, p.ignore_index, static_cast<const A*>(grad), count);
      };
      const auto offset = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16; };
      if (offset(p.logits) == offset(p.dlogits)) {
        launch.template operator()<rowwise::kVecWidth<T>>();
      } else {
        launch.template operator()<1>();
      }
      LN_CUDA_CHECK_LAUNCH();
    });
  });
}

int64_t cross_entropy_fused_classes(int device, DType dtype, DType target_dtype) {
  DeviceGuard guard(device);
  int64_t classes = 0;
  dispatch_float_types(dtype, "cross_entropy", [&]<class T>() {
    dispatch_index(target_dtype, "cross_entropy", [&]<class I>() { classes = fused_kernel<T, I>(device).second; });
  });
  return classes;
}

bool cross_entropy_rows_backward(int device, const cpu::CrossEntropyParams& p, void* row_loss, void* dlogits,
                                 const int64_t* count) {
  const int64_t ld = cpu::row_stride(p);
  const auto offset = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16; };
  LN_CHECK(offset(p.logits) == offset(dlogits), "[cross_entropy] the fused loss and gradient need logits and dlogits "
           "at the same offset modulo 16 bytes, got ", offset(p.logits), " and ", offset(dlogits));
  DeviceGuard guard(device);
  bool fits = false;
  dispatch_float_types(p.dtype, "cross_entropy", [&]<class T>() {
    dispatch_index(p.target_dtype, "cross_entropy", [&]<class I>() {
      using A = acc_t<T>;
      constexpr int V = rowwise::kVecWidth<T>;
      const auto [kernel, most] = fused_kernel<T, I>(device);
      fits = p.classes <= most;
      if (!fits || p.rows == 0) return;
      kernel<<<blocks_for(p.rows), threads_for(p.classes, V), static_cast<size_t>(fused_row_bytes<T, V>(p.classes)),
               stream(device)>>>(static_cast<const T*>(p.logits), static_cast<const I*>(p.targets),
                                 static_cast<A*>(p.lse), static_cast<A*>(row_loss), static_cast<T*>(dlogits), p.rows,
                                 p.classes, ld, p.ignore_index, count);
      LN_CUDA_CHECK_LAUNCH();
    });
  });
  return fits;
}

}  // namespace longnet::cuda
