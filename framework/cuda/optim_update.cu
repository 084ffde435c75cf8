#include "framework/cuda/optim_update.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/device/batch.cuh"
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
  using Step = cpu::AdamWStep<P>;
  P* p;
  const G* g;
  P* m;
  P* v;
  Step step;

  // Operands: param, grad, exp_avg, exp_avg_sq.
  __device__ static AdamWFn bind(void* const (&d)[4], Step step) {
    return {static_cast<P*>(d[0]), static_cast<const G*>(d[1]), static_cast<P*>(d[2]), static_cast<P*>(d[3]), step};
  }

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
  using Step = cpu::SgdStep<P>;
  P* p;
  const G* g;
  P* buf;
  Step step;

  // Operands: param, grad, momentum buffer (null without momentum).
  __device__ static SgdFn bind(void* const (&d)[4], Step step) {
    return {static_cast<P*>(d[0]), static_cast<const G*>(d[1]), static_cast<P*>(d[2]), step};
  }

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

// Batched updates. Each tensor gets whole blocks of kBlock * kPacksPerThread packs (its last
// block also takes the elements after its last whole pack), so a block never straddles two
// tensors and every element sees the same step functor, with the same scalars, as in the
// per-tensor kernel: the results are bit-identical.
constexpr int kPacksPerThread = 4;
constexpr int64_t kPacksPerBlock = int64_t(kBlock) * kPacksPerThread;
// Keeps a launch's grid, and a tensor's running block count, within 31 bits.
constexpr int64_t kMaxBlocksPerLaunch = int64_t(1) << 30;

// The tensors of one launch, passed by value as the kernel's parameters (within the 4 KiB every
// CUDA version accepts): no device buffer to fill, no copy to wait for.
struct TensorBatch {
  void* data[kMaxTensorsPerLaunch][4];        // param, grad, state 0, state 1 (null when unused)
  int64_t numel[kMaxTensorsPerLaunch];
  uint32_t block_end[kMaxTensorsPerLaunch];  // blocks of tensors 0..i together
  int count;
};
static_assert(sizeof(TensorBatch) + sizeof(cpu::AdamWStep<double>) <= 4096, "kernel parameters over 4 KiB");

template <class P, class Fn>
__global__ void __launch_bounds__(kBlock) batched_kernel(TensorBatch batch, typename Fn::Step step) {
  const uint32_t block = blockIdx.x;
  const int lo = batch_member(batch, block);
  // Read into registers: the address of a kernel parameter would make each thread copy it.
  void* data[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) data[k] = batch.data[lo][k];
  const Fn fn = Fn::bind(data, step);
  constexpr int kVecP = Pack<P>::kSize;
  const int64_t n = batch.numel[lo];
  const int64_t packs = n / kVecP;
  const int64_t begin = int64_t(block - batch_first_block(batch, lo)) * kPacksPerBlock;
  const int64_t end = begin + kPacksPerBlock < packs ? begin + kPacksPerBlock : packs;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) fn.pack(i);
  if (block + 1 == batch.block_end[lo]) {
    for (int64_t j = packs * kVecP + threadIdx.x; j < n; j += blockDim.x) fn.one(j);
  }
}

// Blocks a tensor of n elements takes in a batched launch (one at least, for a short tail).
template <class P>
int64_t batched_blocks(int64_t n) {
  const int64_t packs = n / Pack<P>::kSize;
  return packs == 0 ? 1 : (packs + kPacksPerBlock - 1) / kPacksPerBlock;
}

// Whether `t` can join a batched launch: every operand contiguous over the loop and aligned to its
// vector access, and few enough blocks.
template <class P, class G>
bool batchable(const cpu::UpdateOperands& t) {
  const int64_t* param = t.param.strides;
  const int64_t* s0 = t.state[0].data ? t.state[0].strides : param;
  const int64_t* s1 = t.state[1].data ? t.state[1].strides : param;
  if (!is_flat(make_geometry<4>(t.shape, {param, t.grad.strides, s0, s1}))) return false;
  if (!aligned_to(t.grad.data, sizeof(GradVec<P, G>)) || !aligned16(t.param.data)) return false;
  for (const cpu::StridedOperand& s : t.state) {
    if (s.data != nullptr && !aligned16(s.data)) return false;
  }
  return batched_blocks<P>(numel_of(t.shape)) <= kMaxBlocksPerLaunch;
}

// Queues `tensors` (batchable, of one dtype pair) in launches of up to kMaxTensorsPerLaunch.
template <class P, class Fn>
void launch_batched(int device, const std::vector<const cpu::UpdateOperands*>& tensors,
                    const typename Fn::Step& step) {
  TensorBatch batch{};
  int64_t blocks = 0;
  const auto flush = [&] {
    if (batch.count == 0) return;
    batched_kernel<P, Fn><<<static_cast<unsigned>(blocks), kBlock, 0, stream(device)>>>(batch, step);
    LN_CUDA_CHECK_LAUNCH();
    batch.count = 0;
    blocks = 0;
  };
  for (const cpu::UpdateOperands* t : tensors) {
    const int64_t n = numel_of(t->shape);
    const int64_t need = batched_blocks<P>(n);
    if (batch.count == kMaxTensorsPerLaunch || blocks + need > kMaxBlocksPerLaunch) flush();
    const int i = batch.count++;
    batch.data[i][0] = t->param.data;
    batch.data[i][1] = t->grad.data;
    batch.data[i][2] = t->state[0].data;
    batch.data[i][3] = t->state[1].data;
    batch.numel[i] = n;
    blocks += need;
    batch.block_end[i] = static_cast<uint32_t>(blocks);
  }
  flush();
}

// The batched update with functor Fn<P, G>: tensors grouped by (param, grad) dtype, the batchable
// ones launched together, each other one through `single` (the per-tensor path).
template <template <class, class> class Fn, class Scalars, class Single>
void update_many(int device, const char* op, const Scalars& s, std::span<const cpu::UpdateOperands> tensors,
                 const Single& single) {
  std::vector<std::pair<std::pair<DType, DType>, std::vector<const cpu::UpdateOperands*>>> groups;
  for (const cpu::UpdateOperands& t : tensors) {
    if (numel_of(t.shape) == 0) continue;
    bool joins = false;
    dispatch_param_grad(t.param.dtype, t.grad.dtype, op, [&]<class P, class G>() { joins = batchable<P, G>(t); });
    if (!joins) {
      single(t);
      continue;
    }
    const std::pair<DType, DType> key{t.param.dtype, t.grad.dtype};
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == key; });
    if (it == groups.end()) it = groups.insert(groups.end(), {key, {}});
    it->second.push_back(&t);
  }
  DeviceGuard guard(device);
  for (const auto& [key, members] : groups) {
    dispatch_param_grad(key.first, key.second, op, [&]<class P, class G>() {
      launch_batched<P, Fn<P, G>>(device, members, typename Fn<P, G>::Step(s));
    });
  }
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

void adamw_update_many(int device, const cpu::AdamWScalars& s, std::span<const cpu::UpdateOperands> tensors) {
  update_many<AdamWFn>(device, "adamw_update_many", s, tensors, [&](const cpu::UpdateOperands& t) {
    adamw_update(device, s, t.shape, t.param, t.grad, t.state[0], t.state[1]);
  });
}

void sgd_update_many(int device, const cpu::SgdScalars& s, std::span<const cpu::UpdateOperands> tensors) {
  update_many<SgdFn>(device, "sgd_update_many", s, tensors, [&](const cpu::UpdateOperands& t) {
    sgd_update(device, s, t.shape, t.param, t.grad, t.state[0]);
  });
}

}  // namespace longnet::cuda
