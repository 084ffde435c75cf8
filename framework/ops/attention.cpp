#include "framework/ops/attention.h"

#include <atomic>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/attention.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/attention.h"
#endif
#include "framework/ops/attention_math.h"
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/factory.h"

namespace longnet {
namespace {

constexpr int kMaxBatchDims = cpu::kAttentionMaxBatchDims;

// The dtype of lse for a kernel dtype: statistics stay in f32 unless the inputs are f64.
DType stats_dtype(DType kernel) { return kernel == DType::F64 ? DType::F64 : DType::F32; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Shape batch_shape(const Tensor& t, int64_t trailing) {
  return Shape(t.shape().begin(), t.shape().end() - trailing);
}

// Shape (batch..., a, b) or (batch..., a).
Shape with_batch(const Shape& batch, std::initializer_list<int64_t> tail) {
  Shape s = batch;
  s.insert(s.end(), tail);
  return s;
}

void check_layout(const char* op, const AttentionLayout& l, const cpu::AttentionShape& s) {
  LN_CHECK(l.block_size > 0, "[", op, "] layout block size must be positive, got ", l.block_size);
  const int64_t qb = ceil_div(s.q_len, l.block_size), kb = ceil_div(s.k_len, l.block_size);
  LN_CHECK(l.query_blocks == qb && l.key_blocks == kb, "[", op, "] layout of ", l.query_blocks, " x ", l.key_blocks,
           " blocks of ", l.block_size, " does not fit ", s.q_len, " queries and ", s.k_len, " keys (", qb, " x ",
           kb, " blocks)");
  LN_CHECK(l.batch == 1 || l.batch == s.batch(), "[", op, "] layout batch ", l.batch, " is neither 1 nor ",
           s.batch());
  LN_CHECK(l.heads == 1 || l.heads == s.heads, "[", op, "] layout heads ", l.heads, " is neither 1 nor ", s.heads);
  const auto rows = static_cast<size_t>(l.batch * l.heads * l.query_blocks);
  LN_CHECK(l.row_offsets.size() == rows + 1 && l.row_offsets.front() == 0 &&
               l.row_offsets.back() == l.entries() && std::is_sorted(l.row_offsets.begin(), l.row_offsets.end()),
           "[", op, "] layout row offsets must be ", rows + 1, " ascending values from 0 to ", l.entries());
  for (int64_t id : l.key_block_ids) {
    LN_CHECK(id >= 0 && id < kb, "[", op, "] layout key block ", id, " outside [0, ", kb, ")");
  }
}

// Checks q, k, v and the params; returns the kernel geometry.
cpu::AttentionShape check_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const AttentionParams& p) {
  ops::common_device(op, {q, k, v, p.key_padding_mask, p.block_bias});
  ops::require_float(op, q);
  ops::require_same_dtype(op, q, k);
  ops::require_same_dtype(op, q, v);
  LN_CHECK(q.dim() >= 3 && q.dim() <= 3 + kMaxBatchDims, "[", op, "] q must be (..., N, H, D) with at most ",
           kMaxBatchDims, " batch dims, got ", shape_str(q.shape()));
  LN_CHECK(k.shape() == v.shape(), "[", op, "] k ", shape_str(k.shape()), " and v ", shape_str(v.shape()),
           " differ in shape");
  LN_CHECK(k.dim() == q.dim() && batch_shape(k, 3) == batch_shape(q, 3) && k.size(-2) == q.size(-2) &&
               k.size(-1) == q.size(-1),
           "[", op, "] q ", shape_str(q.shape()), " and k ", shape_str(k.shape()),
           " must share batch dims, heads and head dim");
  LN_CHECK(q.size(-1) > 0, "[", op, "] head dim must be positive, got q ", shape_str(q.shape()));
  cpu::AttentionShape s;
  s.batch_dims = static_cast<int>(q.dim() - 3);
  for (int i = 0; i < s.batch_dims; ++i) s.batch_sizes[i] = q.size(i);
  s.q_len = q.size(-3);
  s.k_len = k.size(-3);
  s.heads = q.size(-2);
  s.head_dim = q.size(-1);
  if (p.key_padding_mask.defined()) {
    const Tensor& m = p.key_padding_mask;
    LN_CHECK(m.dtype() == DType::Bool || m.dtype() == DType::U8, "[", op, "] key padding mask must be bool or u8, got ",
             dtype_name(m.dtype()));
    LN_CHECK(m.shape() == with_batch(batch_shape(k, 3), {s.k_len}), "[", op, "] key padding mask ",
             shape_str(m.shape()), " does not match keys ", shape_str(k.shape()), " (expected (..., Nk))");
  }
  if (p.layout) check_layout(op, *p.layout, s);
  if (p.block_bias.defined()) {
    LN_CHECK(p.layout, "[", op, "] a block bias needs a layout");
    ops::require_float(op, p.block_bias);
    LN_CHECK(p.block_bias.shape() == Shape{p.layout->entries()}, "[", op, "] block bias ",
             shape_str(p.block_bias.shape()), " does not match the layout's ", p.layout->entries(), " entries");
    LN_CHECK(p.layout->batch == s.batch() && p.layout->heads == s.heads, "[", op,
             "] a block bias needs a layout with one group per batch element and head, got ", p.layout->batch,
             " x ", p.layout->heads, " for q ", shape_str(q.shape()));
  }
  if (p.scale) LN_CHECK(std::isfinite(*p.scale), "[", op, "] scale must be finite, got ", *p.scale);
  return s;
}

// Operand (batch..., rows, heads, D) as a kernel view; the last dim must be contiguous.
cpu::AttentionView rows_heads_view(const char* op, const char* what, const Tensor& t, int bd) {
  if (!t.defined()) return {};
  LN_CHECK(t.stride(-1) == 1 || t.size(-1) == 1, "[", op, "] ", what, " ", shape_str(t.shape()),
           " needs a contiguous last dim");
  // Rows are BLAS matrix rows: they may not overlap (a single row's stride does not matter).
  const int64_t d = t.size(-1), rows = t.size(bd);
  LN_CHECK(rows <= 1 || (t.stride(bd) >= d && t.stride(bd) <= INT32_MAX), "[", op, "] ", what, " ",
           shape_str(t.shape()), " has row stride ", t.stride(bd), "; rows must not overlap");
  cpu::AttentionView v;
  v.data = t.raw_data();
  for (int i = 0; i < bd; ++i) v.batch[i] = t.stride(i);
  v.row = rows <= 1 ? d : t.stride(bd);
  v.head = t.stride(bd + 1);
  return v;
}

// Operand (batch..., heads, rows) (lse) as a kernel view.
cpu::AttentionView heads_rows_view(const Tensor& t, int bd) {
  if (!t.defined()) return {};
  cpu::AttentionView v;
  v.data = t.raw_data();
  for (int i = 0; i < bd; ++i) v.batch[i] = t.stride(i);
  v.head = t.stride(bd);
  v.row = t.stride(bd + 1);
  return v;
}

// The kernel's mask; `bias` is the block bias already in the kernel dtype (or undefined).
cpu::AttentionMask kernel_mask(const AttentionParams& p, const cpu::AttentionShape& s, const Tensor& bias) {
  cpu::AttentionMask m;
  m.scale = p.scale ? *p.scale : 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  m.causal = p.causal;
  m.causal_offset = p.causal_offset;
  if (p.key_padding_mask.defined()) {
    m.key_padding.data = p.key_padding_mask.raw_data();
    for (int i = 0; i < s.batch_dims; ++i) m.key_padding.batch[i] = p.key_padding_mask.stride(i);
    m.key_padding.row = p.key_padding_mask.stride(-1);
  }
  if (p.layout) {
    const AttentionLayout& l = *p.layout;
    m.layout = {l.block_size, l.batch, l.heads, l.query_blocks, l.key_blocks, l.row_offsets.data(),
                l.key_block_ids.data()};
  }
  m.block_bias = bias.defined() ? bias.raw_data() : nullptr;
  return m;
}

// The block bias in `dtype`, contiguous (undefined stays undefined); not recorded.
Tensor kernel_bias(const Tensor& bias, DType dtype) {
  if (!bias.defined()) return bias;
  NoGradGuard no_grad;
  return cast(bias, dtype).contiguous();
}

void require_kernel_dtype(const char* op, const char* what, const Tensor& t, DType dtype) {
  if (!t.defined()) return;
  LN_CHECK(t.dtype() == dtype, "[", op, "] ", what, " ", shape_str(t.shape()), " is ", dtype_name(t.dtype()),
           ", expected ", dtype_name(dtype));
}

void require_shape(const char* op, const char* what, const Tensor& t, const Shape& shape) {
  if (!t.defined()) return;
  LN_CHECK(t.shape() == shape, "[", op, "] ", what, " ", shape_str(t.shape()), " should be ", shape_str(shape));
}

// Checks the kernel-facing inputs of the *_into entry points: q, k, v in their device's kernel
// dtype (f32 or f64 on the CPU) with contiguous last dims; returns the geometry.
cpu::AttentionShape check_kernel_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                                        const AttentionParams& p) {
  const cpu::AttentionShape s = check_inputs(op, q, k, v, p);
  LN_CHECK(q.dtype() == ops::kernel_dtype(q), "[", op, "] kernel inputs on ", q.device().str(), " must be ",
           dtype_name(ops::kernel_dtype(q)), ", got ", dtype_name(q.dtype()), " q ", shape_str(q.shape()));
  return s;
}

// f32 and f64 on the GPU: the fused kernels take 16-bit operands, so these go through
// materialised scores (attention_math.h).
bool materialises_scores(const Tensor& q) {
  return q.device().is_cuda() && (q.dtype() == DType::F32 || q.dtype() == DType::F64);
}

// The kernels by device. The parameter structs are plain pointers and strides, so the GPU kernels
// take the same ones (layout arrays are host pointers: the GPU path uploads them per call).
void run_forward(const cpu::AttentionForwardParams& p, Device device) {
  LN_ON_DEVICE(device, cpu::attention_forward(p), cuda::attention_forward(device.index, p));
}

void run_backward(const cpu::AttentionBackwardParams& p, Device device) {
  LN_ON_DEVICE(device, cpu::attention_backward(p), cuda::attention_backward(device.index, p));
}

void run_merge(const cpu::AttentionMergeParams& p, Device device) {
  LN_ON_DEVICE(device, cpu::attention_merge(p), cuda::attention_merge(device.index, p));
}

void run_merge_backward(const cpu::AttentionMergeBackwardParams& p, Device device) {
  LN_ON_DEVICE(device, cpu::attention_merge_backward(p), cuda::attention_merge_backward(device.index, p));
}

}  // namespace

namespace {
std::atomic<AttentionKernel> g_attention_kernel{AttentionKernel::Auto};
}  // namespace

void set_attention_kernel(AttentionKernel kernel) { g_attention_kernel.store(kernel); }
AttentionKernel attention_kernel() { return g_attention_kernel.load(); }

AttentionLayout AttentionLayout::from_rows(int64_t block_size, int64_t batch, int64_t heads, int64_t query_blocks,
                                           int64_t key_blocks, std::vector<std::vector<int64_t>> rows) {
  LN_CHECK(static_cast<int64_t>(rows.size()) == batch * heads * query_blocks, "[attention_layout] ", rows.size(),
           " rows given for ", batch, " x ", heads, " x ", query_blocks, " (batch x heads x query blocks)");
  AttentionLayout l{block_size, batch, heads, query_blocks, key_blocks, {0}, {}};
  for (auto& r : rows) {
    std::sort(r.begin(), r.end());
    r.erase(std::unique(r.begin(), r.end()), r.end());
    for (int64_t id : r) {
      LN_CHECK(id >= 0 && id < key_blocks, "[attention_layout] key block ", id, " outside [0, ", key_blocks, ")");
    }
    l.key_block_ids.insert(l.key_block_ids.end(), r.begin(), r.end());
    l.row_offsets.push_back(l.entries());
  }
  return l;
}

void attention_forward_into(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params,
                            const Tensor& out, const Tensor& lse) {
  const char* op = "attention";
  const ProfileScope scope("attention_kernel");
  const cpu::AttentionShape s = check_kernel_inputs(op, q, k, v, params);
  const int bd = s.batch_dims;
  const Shape batch = batch_shape(q, 3);
  require_shape(op, "out", out, q.shape());
  require_shape(op, "lse", lse, with_batch(batch, {s.heads, s.q_len}));
  require_kernel_dtype(op, "out", out, q.dtype());
  require_kernel_dtype(op, "lse", lse, stats_dtype(q.dtype()));
  if (materialises_scores(q)) {
    detail::math_attention_forward(q, k, v, params, out, lse);
    return;
  }
  const Tensor bias = kernel_bias(params.block_bias, q.dtype());
  cpu::AttentionForwardParams kp;
  kp.dtype = q.dtype();
  kp.shape = s;
  kp.q = rows_heads_view(op, "q", q, bd);
  kp.k = rows_heads_view(op, "k", k, bd);
  kp.v = rows_heads_view(op, "v", v, bd);
  kp.out = rows_heads_view(op, "out", out, bd);
  kp.lse = heads_rows_view(lse, bd);
  kp.mask = kernel_mask(params, s, bias);
  run_forward(kp, q.device());
}

void attention_backward_into(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             const Tensor& dout, const Tensor& dlse, const AttentionParams& params,
                             const AttentionGrads& into, bool accumulate) {
  const ProfileScope scope("attention_backward_kernel");
  const char* op = "attention_backward";
  const cpu::AttentionShape s = check_kernel_inputs(op, q, k, v, params);
  const int bd = s.batch_dims;
  const Shape lse_shape = with_batch(batch_shape(q, 3), {s.heads, s.q_len});
  const DType dt = q.dtype();
  LN_CHECK(out.defined() && lse.defined() && dout.defined(), "[", op, "] needs out, lse and dout");
  for (const auto& [what, t, shape] : {std::tuple<const char*, const Tensor&, const Shape&>{"out", out, q.shape()},
                                       {"dout", dout, q.shape()},
                                       {"dq", into.dq, q.shape()},
                                       {"dk", into.dk, k.shape()},
                                       {"dv", into.dv, k.shape()}}) {
    require_shape(op, what, t, shape);
    require_kernel_dtype(op, what, t, dt);
  }
  for (const auto& [what, t] : {std::pair<const char*, const Tensor&>{"lse", lse}, {"dlse", dlse}}) {
    require_shape(op, what, t, lse_shape);
    require_kernel_dtype(op, what, t, stats_dtype(dt));
  }
  const Tensor bias = kernel_bias(params.block_bias, dt);
  if (into.dblock_bias.defined()) {
    LN_CHECK(bias.defined(), "[", op, "] a block bias gradient was asked for without a block bias");
    require_shape(op, "dblock_bias", into.dblock_bias, bias.shape());
    require_kernel_dtype(op, "dblock_bias", into.dblock_bias, dt);
    LN_CHECK(into.dblock_bias.is_contiguous(), "[", op, "] dblock_bias must be contiguous");
  }
  if (materialises_scores(q)) {
    detail::math_attention_backward(q, k, v, out, lse, dout, dlse, params, into, accumulate);
    return;
  }
  cpu::AttentionBackwardParams kp;
  kp.dtype = dt;
  kp.shape = s;
  kp.q = rows_heads_view(op, "q", q, bd);
  kp.k = rows_heads_view(op, "k", k, bd);
  kp.v = rows_heads_view(op, "v", v, bd);
  kp.out = rows_heads_view(op, "out", out, bd);
  kp.dout = rows_heads_view(op, "dout", dout, bd);
  kp.lse = heads_rows_view(lse, bd);
  kp.dlse = heads_rows_view(dlse, bd);
  kp.dq = rows_heads_view(op, "dq", into.dq, bd);
  kp.dk = rows_heads_view(op, "dk", into.dk, bd);
  kp.dv = rows_heads_view(op, "dv", into.dv, bd);
  kp.mask = kernel_mask(params, s, bias);
  kp.accumulate = accumulate;
  kp.block_bias_grad = into.dblock_bias.defined() ? into.dblock_bias.raw_data() : nullptr;
  run_backward(kp, q.device());
}

namespace {

// A tensor in its device's kernel dtype whose (rows, D) slices the kernels can read: a contiguous
// last dim and rows that do not overlap (a broadcast along N is copied); not recorded.
Tensor kernel_operand(const Tensor& t) {
  if (!t.defined()) return t;
  NoGradGuard no_grad;
  const Tensor up = ops::kernel_input(t);
  const bool last_ok = up.stride(-1) == 1 || up.size(-1) == 1;
  const bool rows_ok = up.size(-3) <= 1 || (up.stride(-3) >= up.size(-1) && up.stride(-3) <= INT32_MAX);
  return last_ok && rows_ok ? up : up.contiguous();
}

// The forward in the kernel dtype: out and lse as the kernel produced them.
AttentionOutput forward_kernel_dtype(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p) {
  check_inputs("attention", q, k, v, p);
  const Tensor qk = kernel_operand(q), kk = kernel_operand(k), vk = kernel_operand(v);
  const DType dt = qk.dtype();
  AttentionOutput r{Tensor::empty(q.shape(), dt, q.device()),
                    Tensor::empty(with_batch(batch_shape(q, 3), {q.size(-2), q.size(-3)}), stats_dtype(dt), q.device())};
  attention_forward_into(qk, kk, vk, p, r.out, r.lse);
  return r;
}

class AttentionBackward final : public autograd::Node {
 public:
  AttentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, AttentionParams params)
      : q_(std::move(q)), k_(std::move(k)), v_(std::move(v)), out_(std::move(out)), lse_(std::move(lse)),
        params_(std::move(params)) {}
  std::string name() const override { return "AttentionBackward"; }
  // An unused lse leaves dlse undefined, which keeps the fused (cuDNN) backward eligible.
  bool zero_fills_missing_grads() const override { return false; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    const bool has_bias = next_edges.size() > 3;
    const Tensor dout = g[0].defined() ? g[0] : zeros(out_.shape(), out_.dtype(), out_.device());
    const AttentionGrads d =
        attention_backward(q_, k_, v_, out_, lse_, dout, g[1], params_, next_edges[0].fn != nullptr,
                           next_edges[1].fn != nullptr, next_edges[2].fn != nullptr, has_bias && next_edges[3].fn);
    std::vector<Tensor> grads{cast_like(d.dq, q_), cast_like(d.dk, k_), cast_like(d.dv, v_)};
    if (has_bias) grads.push_back(cast_like(d.dblock_bias, params_.block_bias));
    return grads;
  }
  std::vector<Tensor> saved_tensors() const override { return {q_, k_, v_, out_, lse_, params_.key_padding_mask, params_.block_bias}; }
  void release_saved() override {
    q_ = k_ = v_ = out_ = lse_ = Tensor();
    params_ = AttentionParams();
  }

 private:
  static Tensor cast_like(const Tensor& g, const Tensor& like) { return g.defined() ? cast(g, like.dtype()) : g; }

  Tensor q_, k_, v_, out_, lse_;
  AttentionParams params_;
};

// The params with their tensors detached (for saving in a node).
AttentionParams detached(AttentionParams p) {
  if (p.key_padding_mask.defined()) p.key_padding_mask = p.key_padding_mask.detach();
  if (p.block_bias.defined()) p.block_bias = p.block_bias.detach();
  return p;
}

}  // namespace

AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params) {
  NoGradGuard no_grad;
  AttentionOutput r = forward_kernel_dtype(q, k, v, params);
  r.out = cast(r.out, q.dtype());
  return r;
}

AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                  const Tensor& lse, const Tensor& dout, const Tensor& dlse,
                                  const AttentionParams& params, bool want_dq, bool want_dk, bool want_dv,
                                  bool want_dblock_bias) {
  NoGradGuard no_grad;
  const Tensor qk = kernel_operand(q), kk = kernel_operand(k), vk = kernel_operand(v);
  const DType dt = qk.dtype();
  LN_CHECK(out.defined() && lse.defined() && dout.defined(), "[attention_backward] needs out, lse and dout");
  const Tensor ok = kernel_operand(cast(out, dt)), dok = kernel_operand(cast(dout, dt));
  const Tensor lk = cast(lse, stats_dtype(dt));
  const Tensor dlk = dlse.defined() ? cast(dlse, stats_dtype(dt)) : dlse;
  AttentionGrads g;
  if (want_dq) g.dq = Tensor::empty(q.shape(), dt, q.device());
  if (want_dk) g.dk = Tensor::empty(k.shape(), dt, k.device());
  if (want_dv) g.dv = Tensor::empty(v.shape(), dt, v.device());
  if (want_dblock_bias) {
    LN_CHECK(params.block_bias.defined(), "[attention_backward] a block bias gradient was asked for without a block bias");
    g.dblock_bias = zeros(params.block_bias.shape(), dt, q.device());
  }
  if (want_dq || want_dk || want_dv || want_dblock_bias) {
    attention_backward_into(qk, kk, vk, ok, lk, dok, dlk, params, g, false);
  }
  return g;
}

AttentionOutput attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params) {
  AttentionOutput r;
  Tensor out_kernel;  // the backward's Delta needs the kernel-dtype output (a 16-bit copy rounds it)
  {
    NoGradGuard no_grad;
    r = forward_kernel_dtype(q, k, v, params);
    out_kernel = r.out;
    r.out = cast(r.out, q.dtype());
  }
  std::vector<Tensor> inputs{q, k, v};
  if (params.block_bias.defined()) inputs.push_back(params.block_bias);
  if (autograd::needs_grad(inputs)) {
    autograd::record(std::make_shared<AttentionBackward>(q.detach(), k.detach(), v.detach(), out_kernel.detach(),
                                                         r.lse.detach(), detached(params)),
                     inputs, {r.out, r.lse});
  }
  return r;
}

namespace {

// The merge's operands in the kernel dtype, contiguous, and the kernel's view of them.
struct MergeOperands {
  std::vector<Tensor> o, lse;
  std::vector<const void*> o_ptr, lse_ptr;
  cpu::AttentionMergeParams params;
};

MergeOperands merge_operands(const std::vector<Tensor>& o, const std::vector<Tensor>& lse, const Tensor& out,
                             const Tensor& lse_out) {
  MergeOperands m;
  for (size_t i = 0; i < o.size(); ++i) {
    m.o.push_back(o[i]);
    m.lse.push_back(lse[i]);
    m.o_ptr.push_back(m.o.back().raw_data());
    m.lse_ptr.push_back(m.lse.back().raw_data());
  }
  const Tensor& o0 = m.o.front();
  m.params = {o0.dtype(),      static_cast<int64_t>(o.size()), m.o_ptr.data(), m.lse_ptr.data(),
              out.raw_data(),  lse_out.raw_data(),             o0.numel() / (o0.size(-3) * o0.size(-2) * o0.size(-1)),
              o0.size(-3),     o0.size(-2),                     o0.size(-1)};
  return m;
}

// Every part in the kernel dtype of o_0's device, contiguous; not recorded.
std::vector<Tensor> contiguous_parts(const std::vector<Tensor>& ts, DType dtype) {
  NoGradGuard no_grad;
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(cast(t, dtype).contiguous().detach());
  return out;
}

class MergeAttentionBackward final : public autograd::Node {
 public:
  MergeAttentionBackward(std::vector<Tensor> o, std::vector<Tensor> lse, Tensor out, Tensor lse_out,
                         std::vector<DType> o_dtypes)
      : o_(std::move(o)), lse_(std::move(lse)), out_(std::move(out)), lse_out_(std::move(lse_out)),
        o_dtypes_(std::move(o_dtypes)) {}
  std::string name() const override { return "MergeAttentionBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    const DType dt = out_.dtype();
    const Tensor dout = cast(g[0], dt).contiguous(), dlse = cast(g[1], lse_out_.dtype()).contiguous();
    MergeOperands m = merge_operands(o_, lse_, out_, lse_out_);
    std::vector<Tensor> grads;
    std::vector<void*> do_ptr, dlse_ptr;
    for (size_t i = 0; i < o_.size(); ++i) {
      grads.push_back(Tensor::empty(o_[i].shape(), dt, o_[i].device()));
      grads.push_back(Tensor::empty(lse_[i].shape(), lse_[i].dtype(), lse_[i].device()));
      do_ptr.push_back(grads[2 * i].raw_data());
      dlse_ptr.push_back(grads[2 * i + 1].raw_data());
    }
    run_merge_backward({m.params, dout.raw_data(), dlse.raw_data(), do_ptr.data(), dlse_ptr.data()}, out_.device());
    for (size_t i = 0; i < o_.size(); ++i) grads[2 * i] = cast(grads[2 * i], o_dtypes_[i]);
    return grads;
  }
  void release_saved() override {
    o_.clear();
    lse_.clear();
    out_ = lse_out_ = Tensor();
  }

 private:
  std::vector<Tensor> o_, lse_;
  Tensor out_, lse_out_;
  std::vector<DType> o_dtypes_;
};

}  // namespace

AttentionOutput merge_attention(const std::vector<AttentionOutput>& parts) {
  const char* op = "merge_attention";
  LN_CHECK(!parts.empty(), "[", op, "] needs at least one part");
  const Tensor& o0 = parts.front().out;
  ops::require_float(op, o0);
  LN_CHECK(o0.dim() >= 3, "[", op, "] outputs must be (..., N, H, D), got ", shape_str(o0.shape()));
  const Shape lse_shape = with_batch(batch_shape(o0, 3), {o0.size(-2), o0.size(-3)});
  std::vector<Tensor> inputs, os, lses;
  std::vector<DType> o_dtypes;
  for (const AttentionOutput& p : parts) {
    ops::common_device(op, {o0, p.out, p.lse});
    ops::require_float(op, p.out);
    ops::require_float(op, p.lse);
    LN_CHECK(p.out.shape() == o0.shape() && p.lse.shape() == lse_shape, "[", op, "] part out ",
             shape_str(p.out.shape()), " / lse ", shape_str(p.lse.shape()), " do not match out ",
             shape_str(o0.shape()), " / lse ", shape_str(lse_shape));
    inputs.push_back(p.out);
    inputs.push_back(p.lse);
    os.push_back(p.out);
    lses.push_back(p.lse);
    o_dtypes.push_back(p.out.dtype());
  }
  const DType dt = ops::kernel_dtype(o0);
  const DType st = stats_dtype(dt);
  os = contiguous_parts(os, dt);
  lses = contiguous_parts(lses, st);  // on the CPU st == dt, the one dtype of the merge kernel
  Tensor out = Tensor::empty(o0.shape(), dt, o0.device());
  Tensor lse = Tensor::empty(lse_shape, st, o0.device());
  {
    MergeOperands m = merge_operands(os, lses, out, lse);
    run_merge(m.params, o0.device());
  }
  AttentionOutput r{out, lse};
  {
    NoGradGuard no_grad;
    r.out = cast(out, o0.dtype());
  }
  if (autograd::needs_grad(inputs)) {
    autograd::record(std::make_shared<MergeAttentionBackward>(os, lses, out.detach(), lse.detach(), o_dtypes), inputs, {r.out, r.lse});
  }
  return r;
}

}  // namespace longnet
