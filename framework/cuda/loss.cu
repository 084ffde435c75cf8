#include "framework/cuda/loss.h"

#include <algorithm>
#include <cstdint>

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
  int64_t head, packs;
  __device__ __forceinline__ Split(const T* row, int64_t n) {
    const int64_t misaligned = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) / sizeof(T) % V);
    head = min(n, (V - misaligned) % V);
    packs = (n - head) / V;
  }
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
    const Split<T, V> split(row, classes);
    OnlineLse<A> acc;
    for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x) acc.add(load(row[j]));
    const auto* body = reinterpret_cast<const rowwise::PackBits<T, V>*>(row + split.head);
    for (int64_t p0 = threadIdx.x; p0 < split.packs; p0 += kBatch * blockDim.x) {
      rowwise::PackBits<T, V> raw[kBatch];
      for_batch(p0, split.packs, [&](int b, int64_t p) { raw[b] = body[p]; });
      for_batch(p0, split.packs, [&](int b, int64_t) {
        A v[V];
        rowwise::unpack<T, V>(raw[b], v);
        acc.add(v);
      });
    }
    for (int64_t j = split.head + split.packs * V + threadIdx.x; j < classes; j += blockDim.x) acc.add(load(row[j]));
    const A m = rowwise::block_reduce(acc.m, scratch, rowwise::MaxOp{}, rowwise::minus_inf<A>());
    const A s = rowwise::block_reduce(acc.scaled_to(m), scratch, rowwise::SumOp{}, A(0));
    if (threadIdx.x == 0) {
      const A l = m + rowwise::log_of(s);
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

// One block per row: dlogits = (exp(x - lse) - onehot) * grad / count, written as the row is
// read; exp(x - lse) costs one FFMA and one MUFU.EX2, and the one-hot term touches only the pack
// holding the target. Ignored rows are written as 0 and rows with a bad target as NaN, without
// reading the logits. Rows start `ld` elements apart in both, and only their first `classes`
// elements are touched. logits and dlogits share their offset modulo 16 bytes (checked at launch,
// and kept from row to row by the common stride), so one split serves both.
template <class T, class I, int V>
__global__ void __launch_bounds__(kMaxThreads)
    cross_entropy_backward_kernel(const T* logits, const I* targets, const acc_t<T>* lse, T* dlogits, int64_t rows,
                                  int64_t classes, int64_t ld, int64_t ignore_index, const acc_t<T>* grad,
                                  const int64_t* count) {
  using A = acc_t<T>;
  const int64_t n = *count;
  const A scale = n ? (grad ? *grad : A(1)) / static_cast<A>(n) : A(0);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = static_cast<int64_t>(targets[r]);
    const bool ignored = t == ignore_index;
    const bool live = !ignored && !bad_target(t, classes);
    const A fill = ignored ? A(0) : static_cast<A>(NAN);
    const rowwise::ExpMinus<A> ex(live ? lse[r] : A(0));
    const T* in = logits + r * ld;
    T* out = dlogits + r * ld;
    auto grad_of = [&](int64_t j) {
      return live ? (ex(load(in[j])) - (j == t ? A(1) : A(0))) * scale : fill;
    };
    const Split<T, V> split(in, classes);
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
}

// Enough threads for about four packs each, within [64, kMaxThreads].
int threads_for(int64_t classes, int vec) {
  const int64_t want = (classes / vec + 3) / 4;
  return static_cast<int>(std::clamp<int64_t>((want + 31) / 32 * 32, 64, kMaxThreads));
}

unsigned blocks_for(int64_t rows) { return static_cast<unsigned>(std::clamp<int64_t>(rows, 1, rowwise::kMaxGrid)); }

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

}  // namespace longnet::cuda
