#include "framework/ops/attention_math.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/copy.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"
#include "framework/ops/index.h"
#include "framework/ops/matmul.h"
#include "framework/ops/reduce.h"
#include "framework/ops/shape_ops.h"
#include "framework/ops/view.h"

namespace longnet::detail {
namespace {

// The operands flattened to (Bf, H, rows, D) and what every chunk needs.
struct Problem {
  int64_t bf = 1, h = 0, n = 0, nk = 0, d = 0;
  Shape batch;  // q's leading batch dims
  double scale = 1.0;
  Tensor q, k, v;  // (Bf, H, rows, D) contiguous
  Tensor padding;  // (Bf, 1, 1, Nk) bool, true where a key is padding; or undefined
  Device device;
  DType dtype = DType::F32;
};

// (batch..., rows, H, D) -> (Bf, H, rows, D), contiguous.
Tensor heads_first(const Tensor& t, int64_t bf) {
  const int64_t rows = t.size(-3), h = t.size(-2), d = t.size(-1);
  return contiguous(permute(reshape(contiguous(t), {bf, rows, h, d}), {0, 2, 1, 3}));
}

Problem make_problem(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p) {
  Problem pr;
  const int64_t bd = q.dim() - 3;
  for (int64_t i = 0; i < bd; ++i) {
    pr.batch.push_back(q.size(i));
    pr.bf *= q.size(i);
  }
  pr.n = q.size(-3);
  pr.h = q.size(-2);
  pr.d = q.size(-1);
  pr.nk = k.size(-3);
  pr.scale = p.scale ? *p.scale : 1.0 / std::sqrt(static_cast<double>(pr.d));
  pr.q = heads_first(q, pr.bf);
  pr.k = heads_first(k, pr.bf);
  pr.v = heads_first(v, pr.bf);
  pr.device = q.device();
  pr.dtype = q.dtype();
  if (p.key_padding_mask.defined()) {
    Shape full_shape = pr.batch;
    full_shape.push_back(pr.nk);
    const Tensor m = cast(expand(p.key_padding_mask, full_shape), DType::Bool);
    pr.padding = reshape(contiguous(m), {pr.bf, 1, 1, pr.nk});
  }
  return pr;
}

int64_t chunk_rows(const Problem& pr, int64_t chunk_elements) {
  return std::max<int64_t>(1, std::min(pr.n, chunk_elements / std::max<int64_t>(1, pr.bf * pr.h * pr.nk)));
}

// For rows [r0, r0 + rows), per (layout batch, layout head, row, key): the layout entry the pair
// falls in (0 where none) and whether the layout leaves the pair out. Built on the host, uploaded.
struct LayoutEntries {
  Tensor entry;     // (Lb, Lh, rows, Nk) i64
  Tensor unlisted;  // (Lb, Lh, rows, Nk) bool
};

LayoutEntries layout_entries(const AttentionLayout& l, int64_t r0, int64_t rows, int64_t nk, Device device) {
  std::vector<int64_t> idx(static_cast<size_t>(l.batch * l.heads * rows * nk), -1);
  for (int64_t b = 0; b < l.batch; ++b) {
    for (int64_t h = 0; h < l.heads; ++h) {
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = l.row(b, h, (r0 + i) / l.block_size);
        int64_t* dst = idx.data() + ((b * l.heads + h) * rows + i) * nk;
        for (int64_t e = l.row_offsets[static_cast<size_t>(row)]; e < l.row_offsets[static_cast<size_t>(row) + 1]; ++e) {
          const int64_t kb = l.key_block_ids[static_cast<size_t>(e)];
          for (int64_t j = kb * l.block_size; j < std::min(nk, (kb + 1) * l.block_size); ++j) dst[j] = e;
        }
      }
    }
  }
  std::vector<uint8_t> unlisted(idx.size());
  for (size_t i = 0; i < idx.size(); ++i) {
    unlisted[i] = idx[i] < 0;
    idx[i] = std::max<int64_t>(idx[i], 0);
  }
  const Shape shape{l.batch, l.heads, rows, nk};
  return {from_vector(idx, shape, device), cast(from_vector(unlisted, shape, device), DType::Bool)};
}

// The chunk's masked scaled scores S (Bf, H, rows, Nk) with the block bias added, and for the
// backward the layout entry of each pair (undefined without a layout).
struct Scores {
  Tensor s, entries;
};

Tensor hide(const Tensor& s, const Tensor& masked) {
  return masked_fill(s, expand(masked, s.shape()), -std::numeric_limits<double>::infinity());
}

Scores chunk_scores(const Problem& pr, const AttentionParams& p, const Tensor& bias, int64_t r0, int64_t rows) {
  const Tensor qc = narrow(pr.q, 2, r0, rows);
  Scores out;
  out.s = mul(matmul(qc, transpose(pr.k, 2, 3)), pr.scale);
  if (p.layout) {
    const LayoutEntries le = layout_entries(*p.layout, r0, rows, pr.nk, pr.device);
    out.entries = le.entry;
    if (bias.defined()) {
      out.s = add(out.s, reshape(index_select(bias, 0, reshape(le.entry, {-1})), le.entry.shape()));
    }
    out.s = hide(out.s, le.unlisted);
  }
  if (p.causal) {
    // Key j is visible to row i when j <= i + offset.
    const Tensor row = reshape(arange(static_cast<double>(r0 + p.causal_offset), static_cast<double>(r0 + p.causal_offset + rows),
                                      1.0, DType::I64, pr.device), {rows, 1});
    const Tensor col = reshape(arange(0.0, static_cast<double>(pr.nk), 1.0, DType::I64, pr.device), {1, pr.nk});
    out.s = hide(out.s, compare(col, row, CompareOp::Gt));
  }
  if (pr.padding.defined()) out.s = hide(out.s, pr.padding);
  return out;
}

// lse with -inf rows replaced by 0, so that exp(S - lse) is 0 (not NaN) on rows that see nothing.
Tensor finite_lse(const Tensor& lse) {
  return where(compare(lse, -std::numeric_limits<double>::infinity(), CompareOp::Eq), zeros_like(lse), lse);
}

// logsumexp over the last dim that gives -inf (not NaN) for rows of -inf only.
Tensor row_logsumexp(const Tensor& s) {
  const Tensor m = finite_lse(max(s, 3, true));
  return add(log(sum(exp(sub(s, m)), {3})), squeeze(m, 3));
}

// (Bf, H, rows, D) -> the caller's (batch..., rows, H, D) view layout.
Tensor rows_last(const Tensor& t, const Problem& pr) {
  Shape s = pr.batch;
  s.insert(s.end(), {t.size(2), pr.h, pr.d});
  return reshape(permute(t, {0, 2, 1, 3}), s);
}

// (Bf, H, rows) -> (batch..., H, rows).
Tensor stats_shaped(const Tensor& t, const Problem& pr) {
  Shape s = pr.batch;
  s.insert(s.end(), {pr.h, t.size(2)});
  return reshape(t, s);
}

// (batch..., H, N) of the caller -> (Bf, H, N) (a copy).
Tensor stats_flat(const Tensor& t, const Problem& pr) { return reshape(contiguous(t), {pr.bf, pr.h, pr.n}); }

void store(const Tensor& dst, const Tensor& value, bool accumulate) {
  if (!dst.defined()) return;
  if (accumulate) {
    add_(dst, value);
  } else {
    copy_(dst, value);
  }
}

}  // namespace

void math_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params,
                            const Tensor& out, const Tensor& lse, int64_t chunk_elements) {
  NoGradGuard no_grad;
  const Problem pr = make_problem(q, k, v, params);
  const Tensor bias = params.block_bias.defined() ? cast(params.block_bias, pr.dtype).contiguous() : Tensor();
  const int64_t step = chunk_rows(pr, chunk_elements), bd = static_cast<int64_t>(pr.batch.size());
  for (int64_t r0 = 0; r0 < pr.n; r0 += step) {
    const int64_t rows = std::min(step, pr.n - r0);
    const Scores sc = chunk_scores(pr, params, bias, r0, rows);
    const Tensor l = row_logsumexp(sc.s);
    const Tensor p = exp(sub(sc.s, unsqueeze(finite_lse(l), 3)));
    copy_(narrow(out, bd, r0, rows), rows_last(matmul(p, pr.v), pr));
    copy_(narrow(lse, bd + 1, r0, rows), stats_shaped(l, pr));
  }
}

void math_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                             const Tensor& dout, const Tensor& dlse, const AttentionParams& params,
                             const AttentionGrads& into, bool accumulate, int64_t chunk_elements) {
  NoGradGuard no_grad;
  const Problem pr = make_problem(q, k, v, params);
  const Tensor bias = params.block_bias.defined() ? cast(params.block_bias, pr.dtype).contiguous() : Tensor();
  const Tensor o = heads_first(out, pr.bf), d_o = heads_first(dout, pr.bf);
  const Tensor l = finite_lse(stats_flat(lse, pr));
  // Delta = rowsum(dO o O) - dL: the softmax backward's row term, with the lse gradient folded in.
  Tensor delta = sum(mul(d_o, o), {3});
  if (dlse.defined()) delta = sub(delta, stats_flat(dlse, pr));
  Tensor dk = zeros(pr.k.shape(), pr.dtype, pr.device), dv = zeros(pr.v.shape(), pr.dtype, pr.device);
  std::vector<Tensor> dq_chunks;
  const int64_t step = chunk_rows(pr, chunk_elements);
  for (int64_t r0 = 0; r0 < pr.n; r0 += step) {
    const int64_t rows = std::min(step, pr.n - r0);
    const Scores sc = chunk_scores(pr, params, bias, r0, rows);
    const Tensor p = exp(sub(sc.s, unsqueeze(narrow(l, 2, r0, rows), 3)));
    const Tensor doc = narrow(d_o, 2, r0, rows);
    const Tensor dp = matmul(doc, transpose(pr.v, 2, 3));
    const Tensor ds = mul(p, sub(dp, unsqueeze(narrow(delta, 2, r0, rows), 3)));
    dv = add(dv, matmul(transpose(p, 2, 3), doc));
    dk = add(dk, mul(matmul(transpose(ds, 2, 3), narrow(pr.q, 2, r0, rows)), pr.scale));
    if (into.dq.defined()) dq_chunks.push_back(mul(matmul(ds, pr.k), pr.scale));
    if (into.dblock_bias.defined()) {
      // Each pair's dS goes to its layout entry; pairs outside the layout have dS = 0 (P = 0) and
      // are sent to entry 0 harmlessly.
      const Tensor listed = reshape(contiguous(expand(sc.entries, ds.shape())), {-1});
      add_(into.dblock_bias, scatter_add(zeros_like(into.dblock_bias), 0, listed, reshape(ds, {-1})));
    }
  }
  if (into.dq.defined()) store(into.dq, rows_last(cat(dq_chunks, 2), pr), accumulate);
  store(into.dk, rows_last(dk, pr), accumulate);
  store(into.dv, rows_last(dv, pr), accumulate);
}

}  // namespace longnet::detail
