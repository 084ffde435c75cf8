#include "layers/attention/dilated.h"

#include <algorithm>
#include <limits>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/dilated.h"
#include "framework/ops/factory.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

// One dense attention call of a branch: rows [start, start + segments * length) cut into
// `segments` segments of `length` rows, of which each keeps rows offset, offset + rate, ...; and
// of the heads, those at offset, offset + rate, ... (the heads whose offset is head mod rate).
struct Piece {
  int64_t start, segments, length, offset, rate;
};

// The pieces of branch (w, r) over n rows and the given heads: per head offset, the full segments
// in one call and the shorter last segment in another.
std::vector<Piece> branch_pieces(int64_t n, int64_t heads, int64_t w, int64_t r) {
  w = std::min(w, n);
  const int64_t full = n / w, tail = n - full * w;
  std::vector<Piece> out;
  for (int64_t g = 0; g < std::min(r, heads); ++g) {
    if (full > 0 && g < w) out.push_back({0, full, w, g, r});
    if (tail > 0 && g < tail) out.push_back({full * w, 1, tail, g, r});
  }
  return out;
}

// (B, N, H, D) -> (B, segments, rows, heads, D) of a piece.
Tensor rows_of(const Tensor& t, const Piece& p) {
  if (!t.defined()) return t;
  const int64_t b = t.size(0), h = t.size(2), d = t.size(3);
  return t.narrow(1, p.start, p.segments * p.length)
      .view({b, p.segments, p.length, h, d})
      .slice(2, p.offset, p.length, p.rate)
      .slice(3, p.offset, h, p.rate);
}

// (B, H, N) -> (B, segments, heads, rows) of a piece; undefined stays undefined.
Tensor stats_of(const Tensor& t, const Piece& p) {
  if (!t.defined()) return t;
  const int64_t b = t.size(0), h = t.size(1);
  return t.narrow(2, p.start, p.segments * p.length)
      .view({b, h, p.segments, p.length})
      .slice(3, p.offset, p.length, p.rate)
      .slice(1, p.offset, h, p.rate)
      .permute({0, 2, 1, 3});
}

// (B, N) -> (B, segments, rows) of a piece; undefined stays undefined.
Tensor mask_of(const Tensor& m, const Piece& p) {
  if (!m.defined()) return m;
  return m.narrow(1, p.start, p.segments * p.length)
      .view({m.size(0), p.segments, p.length})
      .slice(2, p.offset, p.length, p.rate);
}

// What a piece's attention call needs besides its operands.
struct Setup {
  std::optional<double> scale;
  bool causal = false;
  Tensor key_padding_mask;  // (B, N) or undefined

  AttentionParams params(const Piece& p) const {
    AttentionParams a;
    a.scale = scale;
    a.causal = causal;  // within the sparsified segment, whose row order is the sequence's
    a.key_padding_mask = mask_of(key_padding_mask, p);
    return a;
  }
};

// The branches of a schedule over n rows (segments clamped to n), when the gathered GPU path can
// take the call: CUDA, 16-bit or f32 (whose branch calls run on materialised scores: one batched
// call per branch instead of one per piece), no padding mask, n a multiple of every segment, and either causal
// (rows a head lacks are padded at the end of its sparsified segment, where no real query sees
// them) or segments that the rates divide. Empty otherwise.
std::vector<DilatedBranch> gathered_branches(const Tensor& q, const std::vector<int64_t>& segments,
                                             const std::vector<int64_t>& rates, const AttentionOptions& options) {
  const int64_t n = q.size(1), d = q.size(3);
  const bool ok = q.device().is_cuda() && (q.dtype() == DType::BF16 || q.dtype() == DType::F16 || q.dtype() == DType::F32) &&
                  !options.key_padding_mask.defined() && (d == 32 || d == 64 || d == 128) && n > 0 &&
                  segments.size() <= 8;
  std::vector<DilatedBranch> branches;
  for (size_t i = 0; ok && i < segments.size(); ++i) {
    const DilatedBranch b{std::min(segments[i], n), rates[i]};
    if (n % b.segment != 0 || (!options.causal && b.segment % b.rate != 0)) return {};
    branches.push_back(b);
  }
  return branches;
}

// The gathered path's forward: one attention call per branch over its gathered segments. Each
// branch's gathered q, k, v are appended to `gathered_qkv`: the backward reuses them, which costs
// their memory (r = 1 branches are views, free) but saves gathering them again.
AttentionOutput gathered_forward(const std::vector<Tensor>& qkv, const std::vector<DilatedBranch>& branches,
                                 const AttentionParams& params, std::vector<Tensor>& gathered_qkv) {
  std::vector<AttentionOutput> parts;
  for (const DilatedBranch& b : branches) {
    for (int i = 0; i < 3; ++i) gathered_qkv.push_back(dilated_gather(qkv[i], b));
    const Tensor* g = &gathered_qkv[gathered_qkv.size() - 3];
    parts.push_back(attention_forward(g[0], g[1], g[2], params));
  }
  return dilated_merge(parts, branches, qkv[0].size(0), qkv[0].size(1));
}

class DilatedAttentionBackward final : public autograd::Node {
 public:
  DilatedAttentionBackward(std::vector<Tensor> saved, Setup setup, std::vector<Piece> pieces,
                           std::vector<DilatedBranch> gathered, std::vector<Tensor> gathered_qkv,
                           std::vector<DType> dtypes)
      : saved_(std::move(saved)), setup_(std::move(setup)), pieces_(std::move(pieces)),
        gathered_(std::move(gathered)), gathered_qkv_(std::move(gathered_qkv)), dtypes_(std::move(dtypes)) {}
  std::string name() const override { return "DilatedAttentionBackward"; }
  // An unused lse leaves dlse undefined, which keeps the fused (cuDNN) backward eligible.
  bool zero_fills_missing_grads() const override { return false; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    const Tensor &q = saved_[0], &lse = saved_[4];
    const Tensor dout = g[0].defined() ? cast(g[0], q.dtype()).contiguous() : zeros(q.shape(), q.dtype(), q.device());
    const Tensor dlse = g[1].defined() ? cast(g[1], lse.dtype()).contiguous() : Tensor();
    std::vector<Tensor> grads(3);
    if (!gathered_.empty() && !dlse.defined()) {
      gathered_backward(dout, grads);
    } else {
      pieces_backward(dout, dlse, grads);
    }
    for (size_t i = 0; i < 3; ++i) {
      if (grads[i].defined()) grads[i] = cast(grads[i], dtypes_[i]);
    }
    return grads;
  }
  std::vector<Tensor> saved_tensors() const override {
    std::vector<Tensor> all = saved_;
    all.insert(all.end(), gathered_qkv_.begin(), gathered_qkv_.end());
    all.push_back(setup_.key_padding_mask);
    return all;
  }
  void release_saved() override {
    saved_.clear();
    gathered_qkv_.clear();
    setup_.key_padding_mask = Tensor();
  }

 private:
  // Each branch's backward on its gathered rows (the forward's q, k, v, with the final out and lse
  // gathered alike), and the branches' gradients summed into place.
  void gathered_backward(const Tensor& dout, std::vector<Tensor>& grads) const {
    const Tensor &q = saved_[0], &out = saved_[3], &lse = saved_[4];
    AttentionParams params;
    params.scale = setup_.scale;
    params.causal = setup_.causal;
    std::vector<Tensor> parts[3];
    for (size_t i = 0; i < gathered_.size(); ++i) {
      const DilatedBranch& b = gathered_[i];
      const Tensor* qkv = &gathered_qkv_[3 * i];
      const AttentionGrads g =
          attention_backward(qkv[0], qkv[1], qkv[2], dilated_gather(out, b), dilated_gather_stats(lse, b),
                             dilated_gather(dout, b), Tensor(), params,
                             next_edges[0].fn != nullptr, next_edges[1].fn != nullptr, next_edges[2].fn != nullptr);
      const Tensor* each[3] = {&g.dq, &g.dk, &g.dv};
      for (int i = 0; i < 3; ++i) {
        if (each[i]->defined()) parts[i].push_back(*each[i]);
      }
    }
    for (int i = 0; i < 3; ++i) {
      if (!parts[i].empty()) grads[i] = dilated_sum(parts[i], gathered_, q.size(0), q.size(1));
    }
  }

  void pieces_backward(const Tensor& dout, const Tensor& dlse, std::vector<Tensor>& grads) const {
    const Tensor &q = saved_[0], &k = saved_[1], &v = saved_[2], &out = saved_[3], &lse = saved_[4];
    for (size_t i = 0; i < 3; ++i) {
      if (next_edges[i].fn) grads[i] = zeros(saved_[i].shape(), q.dtype(), q.device());
    }
    // Every piece's backward with the final out and lse: P = exp(S - L) are the merged
    // probabilities, so the sum over pieces is the exact gradient of the merged result.
    for (const Piece& p : pieces_) {
      attention_backward_into(rows_of(q, p), rows_of(k, p), rows_of(v, p), rows_of(out, p), stats_of(lse, p),
                              rows_of(dout, p), stats_of(dlse, p), setup_.params(p),
                              {rows_of(grads[0], p), rows_of(grads[1], p), rows_of(grads[2], p), Tensor()}, true);
    }
  }

  std::vector<Tensor> saved_;  // q, k, v, out in the kernel dtype, lse
  Setup setup_;
  std::vector<Piece> pieces_;
  std::vector<DilatedBranch> gathered_;  // the branches, when the gathered path ran
  std::vector<Tensor> gathered_qkv_;     // their gathered q, k, v (3 per branch)
  std::vector<DType> dtypes_;            // of q, k, v
};

}  // namespace

DilatedAttention::DilatedAttention(const AttentionConfig& config)
    : scale_(config.scale), segment_lengths_(config.segment_lengths), dilation_rates_(config.dilation_rates) {
  LN_CHECK(!segment_lengths_.empty() && segment_lengths_.size() == dilation_rates_.size(),
           "[dilated] needs as many segment lengths as dilation rates (at least one), got ", segment_lengths_.size(),
           " and ", dilation_rates_.size());
  for (size_t i = 0; i < segment_lengths_.size(); ++i) {
    LN_CHECK(segment_lengths_[i] > 0 && dilation_rates_[i] > 0, "[dilated] segment length and dilation rate must be ",
             "positive, got (", segment_lengths_[i], ", ", dilation_rates_[i], ")");
  }
}

AttentionResult DilatedAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                          const AttentionOptions& options) {
  check_core_inputs("dilated", q, k, v, options, false);
  const int64_t n = q.size(1), heads = q.size(2);
  const Setup setup{scale_, options.causal, options.key_padding_mask.defined() ? options.key_padding_mask.detach()
                                                                               : Tensor()};
  std::vector<Piece> all_pieces;
  const std::vector<DilatedBranch> gathered = gathered_branches(q, segment_lengths_, dilation_rates_, options);
  AttentionOutput merged;
  std::vector<Tensor> saved, gathered_qkv;
  {
    NoGradGuard no_grad;
    const DType dt = ops::kernel_dtype(q);
    for (const Tensor& t : {q, k, v}) saved.push_back(cast(t, dt).contiguous().detach());
    const DType st = dt == DType::F64 ? DType::F64 : DType::F32;
    for (size_t b = 0; b < segment_lengths_.size() && n > 0; ++b) {
      // The pieces serve the backward when the gathered path cannot (an lse gradient).
      for (const Piece& p : branch_pieces(n, heads, segment_lengths_[b], dilation_rates_[b])) all_pieces.push_back(p);
    }
    if (!gathered.empty()) {
      AttentionParams params;
      params.scale = scale_;
      params.causal = options.causal;
      merged = gathered_forward(saved, gathered, params, gathered_qkv);
    }
    for (size_t b = 0; b < segment_lengths_.size() && n > 0 && gathered.empty(); ++b) {
      AttentionOutput part{zeros(q.shape(), dt, q.device()),
                           full({q.size(0), heads, n}, -std::numeric_limits<double>::infinity(), st, q.device())};
      for (const Piece& p : branch_pieces(n, heads, segment_lengths_[b], dilation_rates_[b])) {
        attention_forward_into(rows_of(saved[0], p), rows_of(saved[1], p), rows_of(saved[2], p), setup.params(p),
                               rows_of(part.out, p), stats_of(part.lse, p));
      }
      merged = merged.out.defined() ? merge_attention({merged, part}) : part;
    }
    if (!merged.out.defined()) {  // an empty sequence
      merged = {zeros(q.shape(), dt, q.device()), full({q.size(0), heads, n}, 0.0, st, q.device())};
    }
  }
  AttentionResult r{cast(merged.out, q.dtype()), merged.lse, Tensor()};
  if (autograd::needs_grad({q, k, v})) {
    saved.push_back(merged.out.detach());
    saved.push_back(merged.lse.detach());
    autograd::record(std::make_shared<DilatedAttentionBackward>(std::move(saved), setup, std::move(all_pieces), gathered,
                                                                std::move(gathered_qkv),
                                                                std::vector<DType>{q.dtype(), k.dtype(), v.dtype()}),
                     {q, k, v}, {r.out, r.lse});
  }
  return r;
}

}  // namespace longnet
