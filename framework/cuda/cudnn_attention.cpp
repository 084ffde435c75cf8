#include "framework/cuda/cudnn_attention.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/cudnn_graph.h"
#include "framework/cuda/scoped_buffer.h"
#include "framework/ops/attention.h"

// The graphs follow the shape cuDNN's flash engines are written for: S = Q K^T, scaled, causal
// mask from generated row/column indices, softmax as max / sub / exp / sum / log, P V; the
// backward recomputes P from the saved statistics and forms dS = P (dP - rowsum(dO O)).
namespace longnet::cuda {
namespace {

using cpu::AttentionShape;
using cpu::AttentionView;
using dnn::GraphBuilder;
using dnn::TensorId;
using Plan = GraphBuilder::Plan;

constexpr int kMaxOperands = 9;

// An operand in cuDNN's (b, h, s, d) order: element strides of batch, head and row.
struct Strides {
  int64_t b = 0, h = 0, s = 0;
};

// One cuDNN call: its batch size, and per operand its strides and element offset from the view.
struct Call {
  int64_t b = 1;
  std::vector<Strides> strides;
  std::vector<std::vector<int64_t>> offsets;  // per outer batch index, per operand
};

// Folds the leading batch dims into cuDNN's single batch dim where every operand allows it
// (stride of dim i == stride of dim i+1 * size of dim i+1); dims that do not fold are looped over.
Call split_batch(const AttentionShape& s, const std::vector<const AttentionView*>& views,
                 const std::vector<int64_t>& rows) {
  const size_t n = views.size();
  Call c;
  // Without a batch dim of size > 1 the batch stride is free; a packed one keeps cuDNN's checks happy.
  for (size_t o = 0; o < n; ++o) {
    const AttentionView* v = views[o];
    c.strides.push_back({std::max(v->head * s.heads, v->row * rows[o]), v->head, v->row});
  }
  bool started = false;
  int folded_from = s.batch_dims;
  for (int i = s.batch_dims - 1; i >= 0; --i) {
    if (s.batch_sizes[i] == 1) {
      if (!started) folded_from = i;
      continue;
    }
    if (started) {
      bool ok = true;
      for (size_t o = 0; o < n; ++o) ok = ok && views[o]->batch[i] == c.strides[o].b * c.b;
      if (!ok) break;
    } else {
      for (size_t o = 0; o < n; ++o) c.strides[o].b = views[o]->batch[i];
      started = true;
    }
    c.b *= s.batch_sizes[i];
    folded_from = i;
  }
  // Outer dims [0, folded_from): every combination of their indices is one call.
  std::vector<int64_t> idx(static_cast<size_t>(folded_from), 0);
  while (true) {
    std::vector<int64_t> off(n, 0);
    for (int i = 0; i < folded_from; ++i) {
      for (size_t o = 0; o < n; ++o) off[o] += idx[static_cast<size_t>(i)] * views[o]->batch[i];
    }
    c.offsets.push_back(std::move(off));
    int i = folded_from - 1;
    while (i >= 0 && ++idx[static_cast<size_t>(i)] == s.batch_sizes[i]) idx[static_cast<size_t>(i--)] = 0;
    if (i < 0) break;
  }
  return c;
}

cudnnDataType_t io_type(DType t) { return t == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF; }

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// What cuDNN's engines need of an operand: 16-byte aligned rows.
bool vector_friendly(const AttentionView& v, const AttentionShape& s) {
  if (!aligned(v.data) || v.row % 8 || v.head % 8) return false;
  for (int i = 0; i < s.batch_dims; ++i) {
    if (s.batch_sizes[i] > 1 && v.batch[i] % 8) return false;
  }
  return true;
}

// Statistics go to cuDNN packed (b, h, s); other layouts go through a copy.
bool stats_packed(const Strides& st, int64_t b, const AttentionShape& s) {
  return st.s == 1 && (s.heads == 1 || st.h == s.q_len) && (b == 1 || st.b == s.heads * s.q_len);
}

// Why cuDNN cannot take a call, or null when it can.
const char* unsupported(const AttentionShape& s, DType dtype, const cpu::AttentionMask& m,
                        std::initializer_list<const AttentionView*> operands) {
  if (dtype != DType::BF16 && dtype != DType::F16) return "it takes bf16 or f16 operands";
  // The same head dims as our kernel, so that what runs does not depend on the kernel chosen.
  if (s.head_dim != 32 && s.head_dim != 64 && s.head_dim != 128) return "head dims are 32, 64 or 128";
  if (s.q_len == 0 || s.k_len == 0) return "a sequence is empty";
  if (m.key_padding.data) return "key padding masks are ours";
  if (m.layout.block || m.block_bias) return "block layouts and biases are ours";
  if (m.causal && m.causal_offset != 0) return "its causal diagonal is the top-left one";
  for (const AttentionView* v : operands) {
    if (!vector_friendly(*v, s)) return "operand rows must be 16-byte aligned";
  }
  return nullptr;
}

// Whether to take the cuDNN path; with the kernel forced to cuDNN, a call it cannot take fails.
bool use_cudnn(const char* why_not) {
  const AttentionKernel k = attention_kernel();
  if (k == AttentionKernel::Own) return false;
  LN_CHECK(!(why_not && k == AttentionKernel::Cudnn), "[attention] the cuDNN kernel was required, but ", why_not);
  return why_not == nullptr;
}

// A planned graph and the ids of the tensors bound at execution, by role.
struct Entry {
  std::shared_ptr<Plan> plan;
  std::vector<TensorId> ids;
};

// Plans per device and graph signature; an entry without a plan records that cuDNN declined.
std::shared_ptr<const Entry> cached_entry(int device, const std::vector<int64_t>& key,
                                          const std::function<Entry()>& build) {
  static std::mutex mutex;
  static std::map<std::pair<int, std::vector<int64_t>>, std::shared_ptr<const Entry>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({device, key});
  if (it != cache.end()) return it->second;
  auto entry = std::make_shared<const Entry>(build());
  LN_CHECK(entry->plan || attention_kernel() != AttentionKernel::Cudnn,
           "[attention] the cuDNN kernel was required but cuDNN declined the graph");
  cache.emplace(std::make_pair(device, key), entry);
  return entry;
}

std::vector<int64_t> packed(int64_t h, int64_t s, int64_t d) { return {h * s * d, s * d, d, 1}; }
std::vector<int64_t> operand_strides(const Strides& s) { return {s.b, s.h, s.s, 1}; }
// An operand seen transposed: (b, h, d, s).
std::vector<int64_t> transposed_strides(const Strides& s) { return {s.b, s.h, 1, s.s}; }

// The masked, scaled scores (b, h, sq, skv) of Q K^T.
TensorId scores(GraphBuilder& g, TensorId q, TensorId kt, TensorId scale, TensorId neg_inf, bool causal,
                const std::vector<int64_t>& dims) {
  const auto str = packed(dims[1], dims[2], dims[3]);
  const TensorId raw = g.virtual_tensor(CUDNN_DATA_FLOAT, dims, str);
  g.matmul(q, kt, raw);
  const TensorId scaled = g.virtual_tensor(CUDNN_DATA_FLOAT, dims, str);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, raw, scale, 0, scaled);
  if (!causal) return scaled;
  const TensorId row = g.virtual_tensor(CUDNN_DATA_INT32, dims, str);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, scaled, 0, 0, row, 2);
  const TensorId col = g.virtual_tensor(CUDNN_DATA_INT32, dims, str);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, scaled, 0, 0, col, 3);
  const TensorId keep = g.virtual_tensor(CUDNN_DATA_BOOLEAN, dims, str);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, 0, keep);
  const TensorId masked = g.virtual_tensor(CUDNN_DATA_FLOAT, dims, str);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, scaled, neg_inf, keep, masked);
  return masked;
}

// Everything a graph's signature depends on besides the per-operand strides.
std::vector<int64_t> signature(int64_t kind, DType dtype, const AttentionShape& s, int64_t b, bool causal,
                               const std::vector<Strides>& st) {
  std::vector<int64_t> key{kind, static_cast<int64_t>(dtype), b, s.heads, s.q_len, s.k_len, s.head_dim, causal};
  for (const Strides& x : st) key.insert(key.end(), {x.b, x.h, x.s});
  return key;
}

enum ForwardRole { kFQ, kFK, kFV, kFO, kFStats, kFScale, kFNegInf };

Entry build_forward(int device, DType dtype, const AttentionShape& s, int64_t b, bool causal,
                    const std::vector<Strides>& st) {
  GraphBuilder g;
  const int64_t h = s.heads, sq = s.q_len, sk = s.k_len, d = s.head_dim;
  const cudnnDataType_t io = io_type(dtype);
  std::vector<TensorId> ids(7);
  ids[kFQ] = g.tensor(io, {b, h, sq, d}, operand_strides(st[0]));
  ids[kFK] = g.tensor(io, {b, h, d, sk}, transposed_strides(st[1]));
  ids[kFV] = g.tensor(io, {b, h, sk, d}, operand_strides(st[2]));
  ids[kFScale] = g.scalar(CUDNN_DATA_FLOAT);
  // Only a graph that uses a tensor may bind it (id 0: absent).
  ids[kFNegInf] = causal ? g.scalar(CUDNN_DATA_FLOAT) : 0;
  const std::vector<int64_t> sdims{b, h, sq, sk}, sstr = packed(h, sq, sk);
  const std::vector<int64_t> rdims{b, h, sq, 1}, rstr{h * sq, sq, 1, 1};
  const TensorId sc = scores(g, ids[kFQ], ids[kFK], ids[kFScale], ids[kFNegInf], causal, sdims);
  const TensorId mx = g.virtual_tensor(CUDNN_DATA_FLOAT, rdims, rstr);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, sc, mx);
  const TensorId centred = g.virtual_tensor(CUDNN_DATA_FLOAT, sdims, sstr);
  g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, sc, mx, 0, centred);
  const TensorId e = g.virtual_tensor(CUDNN_DATA_FLOAT, sdims, sstr);
  g.pointwise(CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, centred, 0, 0, e);
  const TensorId sum = g.virtual_tensor(CUDNN_DATA_FLOAT, rdims, rstr);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, sum);
  const TensorId log_sum = g.virtual_tensor(CUDNN_DATA_FLOAT, rdims, rstr);
  g.pointwise(CUDNN_POINTWISE_LOG, CUDNN_DATA_FLOAT, sum, 0, 0, log_sum);
  ids[kFStats] = g.tensor(CUDNN_DATA_FLOAT, rdims, rstr);
  g.pointwise(CUDNN_POINTWISE_ADD, CUDNN_DATA_FLOAT, mx, log_sum, 0, ids[kFStats]);
  const TensorId p = g.virtual_tensor(io, sdims, sstr);
  g.pointwise(CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, e, sum, 0, p);
  ids[kFO] = g.tensor(io, {b, h, sq, d}, operand_strides(st[3]));
  g.matmul(p, ids[kFV], ids[kFO]);
  return {g.build(cudnn(device), nullptr), std::move(ids)};
}

enum BackwardRole { kBQ, kBK, kBV, kBO, kBdO, kBdQ, kBdK, kBdV, kBStats, kBScale, kBNegInf, kBOne, kBDelta, kBdQAcc };

Entry build_backward(int device, DType dtype, const AttentionShape& s, int64_t b, bool causal,
                     const std::vector<Strides>& st) {
  GraphBuilder g;
  const int64_t h = s.heads, sq = s.q_len, sk = s.k_len, d = s.head_dim;
  const cudnnDataType_t io = io_type(dtype);
  std::vector<TensorId> ids(14);
  ids[kBQ] = g.tensor(io, {b, h, sq, d}, operand_strides(st[0]));
  ids[kBK] = g.tensor(io, {b, h, d, sk}, transposed_strides(st[1]));
  ids[kBV] = g.tensor(io, {b, h, d, sk}, transposed_strides(st[2]));
  ids[kBO] = g.tensor(io, {b, h, sq, d}, operand_strides(st[3]));
  ids[kBdO] = g.tensor(io, {b, h, sq, d}, operand_strides(st[4]));
  ids[kBStats] = g.tensor(CUDNN_DATA_FLOAT, {b, h, sq, 1}, {h * sq, sq, 1, 1});
  ids[kBScale] = g.scalar(CUDNN_DATA_FLOAT);
  ids[kBNegInf] = causal ? g.scalar(CUDNN_DATA_FLOAT) : 0;
  ids[kBOne] = g.scalar(CUDNN_DATA_FLOAT);
  const std::vector<int64_t> sdims{b, h, sq, sk}, sstr = packed(h, sq, sk);
  const std::vector<int64_t> rdims{b, h, sq, 1}, rstr{h * sq, sq, 1, 1};
  // Delta = rowsum(dO o O), kept in the workspace for the dS pass.
  const TensorId prod = g.virtual_tensor(CUDNN_DATA_FLOAT, {b, h, sq, d}, packed(h, sq, d));
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, ids[kBdO], ids[kBO], 0, prod);
  const TensorId rowsum = g.virtual_tensor(CUDNN_DATA_FLOAT, rdims, rstr);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, prod, rowsum);
  ids[kBDelta] = g.tensor(CUDNN_DATA_FLOAT, rdims, rstr);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, rowsum, ids[kBOne], 0, ids[kBDelta]);
  // P = exp(S - L) from the saved statistics.
  const TensorId sc = scores(g, ids[kBQ], ids[kBK], ids[kBScale], ids[kBNegInf], causal, sdims);
  const TensorId centred = g.virtual_tensor(CUDNN_DATA_FLOAT, sdims, sstr);
  g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, sc, ids[kBStats], 0, centred);
  const TensorId p = g.virtual_tensor(CUDNN_DATA_FLOAT, sdims, sstr);
  g.pointwise(CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, centred, 0, 0, p);
  // dV = P^T dO.
  const std::vector<int64_t> tdims{b, h, sk, sq}, tstr{h * sq * sk, sq * sk, 1, sk};
  const TensorId pt = g.virtual_tensor(io, tdims, tstr);
  g.reshape(p, pt);
  ids[kBdV] = g.tensor(io, {b, h, sk, d}, operand_strides(st[7]));
  g.matmul(pt, ids[kBdO], ids[kBdV]);
  // dS = scale * P (dO V^T - Delta).
  const TensorId dp = g.virtual_tensor(CUDNN_DATA_FLOAT, sdims, sstr);
  g.matmul(ids[kBdO], ids[kBV], dp);
  const TensorId centred_dp = g.virtual_tensor(CUDNN_DATA_FLOAT, sdims, sstr);
  g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, dp, ids[kBDelta], 0, centred_dp);
  const TensorId ds_unscaled = g.virtual_tensor(CUDNN_DATA_FLOAT, sdims, sstr);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, centred_dp, p, 0, ds_unscaled);
  const TensorId ds = g.virtual_tensor(CUDNN_DATA_FLOAT, sdims, sstr);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, ds_unscaled, ids[kBScale], 0, ds);
  // dK = dS^T Q.
  const TensorId dst = g.virtual_tensor(io, tdims, tstr);
  g.reshape(ds, dst);
  ids[kBdK] = g.tensor(io, {b, h, sk, d}, operand_strides(st[6]));
  g.matmul(dst, ids[kBQ], ids[kBdK]);
  // dQ = dS K, accumulated in f32 in the workspace, then converted.
  const TensorId k = g.virtual_tensor(io, {b, h, sk, d}, operand_strides(st[1]));
  g.reshape(ids[kBK], k);
  ids[kBdQAcc] = g.tensor(CUDNN_DATA_FLOAT, {b, h, sq, d}, packed(h, sq, d));
  g.matmul(ds, k, ids[kBdQAcc]);
  ids[kBdQ] = g.tensor(io, {b, h, sq, d}, operand_strides(st[5]));
  g.pointwise(CUDNN_POINTWISE_IDENTITY, CUDNN_DATA_FLOAT, ids[kBdQAcc], 0, 0, ids[kBdQ]);
  return {g.build(cudnn(device), nullptr), std::move(ids)};
}

// Byte address of a view's element at an element offset.
void* at(const AttentionView& v, int64_t offset, size_t elem) {
  return static_cast<char*>(v.data) + offset * static_cast<int64_t>(elem);
}

}  // namespace

bool cudnn_attention_forward(int device, const cpu::AttentionForwardParams& p) {
  const AttentionShape& s = p.shape;
  if (!use_cudnn(unsupported(s, p.dtype, p.mask, {&p.q, &p.k, &p.v, &p.out}))) return false;
  if (s.batch() == 0 || s.heads == 0) return true;
  const Call c = split_batch(s, {&p.q, &p.k, &p.v, &p.out, &p.lse}, {s.q_len, s.k_len, s.k_len, s.q_len, 1});
  const std::vector<Strides> ops(c.strides.begin(), c.strides.begin() + 4);
  DeviceGuard guard(device);
  const auto entry = cached_entry(device, signature(0, p.dtype, s, c.b, p.mask.causal, ops),
                                  [&] { return build_forward(device, p.dtype, s, c.b, p.mask.causal, ops); });
  if (!entry->plan) return false;
  cudaStream_t st = stream(device);
  const bool direct_stats = stats_packed(c.strides[4], c.b, s);
  const size_t stats_bytes = static_cast<size_t>(c.b * s.heads * s.q_len) * sizeof(float);
  const ScopedBuffer stats_tmp(direct_stats ? 0 : stats_bytes, st);
  const ScopedBuffer workspace(static_cast<size_t>(entry->plan->workspace_bytes), st);
  float scale = static_cast<float>(p.mask.scale), neg_inf = -INFINITY;
  const size_t es = dtype_size(p.dtype);
  const auto& id = entry->ids;
  for (const std::vector<int64_t>& off : c.offsets) {
    void* lse = at(p.lse, off[4], sizeof(float));
    void* stats = direct_stats ? lse : stats_tmp.get();
    entry->plan->execute(cudnn(device),
                         {{id[kFQ], at(p.q, off[0], es)}, {id[kFK], at(p.k, off[1], es)}, {id[kFV], at(p.v, off[2], es)},
                          {id[kFO], at(p.out, off[3], es)}, {id[kFStats], stats}, {id[kFScale], &scale},
                          {id[kFNegInf], &neg_inf}},
                         workspace.get());
    if (!direct_stats) {
      detail::copy_stats(c.b, s.heads, s.q_len, {lse, c.strides[4].b, c.strides[4].s, c.strides[4].h},
                         {stats, s.heads * s.q_len, 1, s.q_len}, st);
    }
  }
  return true;
}

bool cudnn_attention_backward(int device, const cpu::AttentionBackwardParams& p) {
  const AttentionShape& s = p.shape;
  const char* why_not = unsupported(s, p.dtype, p.mask, {&p.q, &p.k, &p.v, &p.out, &p.dout});
  if (!why_not && p.dlse.data) why_not = "lse gradients are ours";
  if (!use_cudnn(why_not)) return false;
  // Gradients cuDNN cannot write in place (accumulated, not requested or misaligned) go to a
  // packed (b, s, h, d) scratch first.
  const AttentionView* grads[3] = {&p.dq, &p.dk, &p.dv};
  bool direct[3];
  for (int i = 0; i < 3; ++i) direct[i] = !p.accumulate && grads[i]->data && vector_friendly(*grads[i], s);
  if (s.batch() == 0 || s.heads == 0) return true;
  DeviceGuard guard(device);
  cudaStream_t st = stream(device);
  const int64_t total = s.batch(), h = s.heads, d = s.head_dim;
  const int64_t lens[3] = {s.q_len, s.k_len, s.k_len};
  std::vector<std::unique_ptr<ScopedBuffer>> scratch(3);
  AttentionView target[3];
  const size_t es = dtype_size(p.dtype);
  for (int i = 0; i < 3; ++i) {
    if (direct[i]) {
      target[i] = *grads[i];
      continue;
    }
    scratch[i] = std::make_unique<ScopedBuffer>(static_cast<size_t>(total * lens[i] * h * d) * es, st);
    target[i].data = scratch[i]->get();
    target[i].row = h * d;
    target[i].head = d;
    int64_t stride = lens[i] * h * d;
    for (int j = s.batch_dims - 1; j >= 0; --j) {
      target[i].batch[j] = stride;
      stride *= s.batch_sizes[j];
    }
  }
  const Call c = split_batch(s, {&p.q, &p.k, &p.v, &p.out, &p.dout, &target[0], &target[1], &target[2], &p.lse},
                             {s.q_len, s.k_len, s.k_len, s.q_len, s.q_len, s.q_len, s.k_len, s.k_len, 1});
  const std::vector<Strides> ops(c.strides.begin(), c.strides.begin() + 8);
  const auto entry = cached_entry(device, signature(1, p.dtype, s, c.b, p.mask.causal, ops),
                                  [&] { return build_backward(device, p.dtype, s, c.b, p.mask.causal, ops); });
  if (!entry->plan) return false;
  const bool direct_stats = stats_packed(c.strides[8], c.b, s);
  const int64_t rows = c.b * h * s.q_len;
  const ScopedBuffer stats_tmp(direct_stats ? 0 : static_cast<size_t>(rows) * sizeof(float), st);
  const ScopedBuffer delta(static_cast<size_t>(rows) * sizeof(float), st);
  const ScopedBuffer dq_acc(static_cast<size_t>(rows * d) * sizeof(float), st);
  const ScopedBuffer workspace(static_cast<size_t>(entry->plan->workspace_bytes), st);
  float scale = static_cast<float>(p.mask.scale), neg_inf = -INFINITY, one = 1.f;
  const auto& id = entry->ids;
  for (const std::vector<int64_t>& off : c.offsets) {
    void* lse = at(p.lse, off[8], sizeof(float));
    if (!direct_stats) {
      detail::copy_stats(c.b, h, s.q_len, {stats_tmp.get(), h * s.q_len, 1, s.q_len},
                         {lse, c.strides[8].b, c.strides[8].s, c.strides[8].h}, st);
    }
    entry->plan->execute(
        cudnn(device),
        {{id[kBQ], at(p.q, off[0], es)}, {id[kBK], at(p.k, off[1], es)}, {id[kBV], at(p.v, off[2], es)},
         {id[kBO], at(p.out, off[3], es)}, {id[kBdO], at(p.dout, off[4], es)}, {id[kBdQ], at(target[0], off[5], es)},
         {id[kBdK], at(target[1], off[6], es)}, {id[kBdV], at(target[2], off[7], es)},
         {id[kBStats], direct_stats ? lse : stats_tmp.get()}, {id[kBScale], &scale}, {id[kBNegInf], &neg_inf},
         {id[kBOne], &one}, {id[kBDelta], delta.get()}, {id[kBdQAcc], dq_acc.get()}},
        workspace.get());
  }
  // Scratch gradients land in the caller's views: added when accumulating, else copied.
  for (int i = 0; i < 3; ++i) {
    if (direct[i] || !grads[i]->data) continue;
    detail::scatter_rows(p.dtype, s, lens[i], *grads[i], target[i], p.accumulate, st);
  }
  return true;
}

}  // namespace longnet::cuda
