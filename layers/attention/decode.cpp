// The KV cache, and the decode step of the dense and dilated cores.
#include "layers/attention/decode.h"

#include <algorithm>
#include <limits>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"
#include "framework/ops/reduce.h"
#include "framework/ops/shape_ops.h"
#include "layers/attention/decode_step.h"
#include "layers/attention/dense.h"
#include "layers/attention/dilated.h"

namespace longnet {

KvCache::KvCache(int64_t max_length, int64_t chunk) : max_length_(max_length), chunk_(chunk) {
  LN_CHECK(max_length > 0 && chunk > 0, "[kv_cache] max_length and chunk must be positive, got ", max_length, " and ",
           chunk);
}

Tensor KvCache::keys() const { return keys_.defined() ? keys_.narrow(1, 0, length_) : Tensor(); }

Tensor KvCache::values() const { return values_.defined() ? values_.narrow(1, 0, length_) : Tensor(); }

void KvCache::reserve(int64_t rows) {
  if (rows <= capacity()) return;
  // Doubling keeps the copies amortised O(1) per row; chunks keep small caches from many regrowths.
  int64_t want = std::max(rows, 2 * capacity());
  want = std::min(max_length_, (want + chunk_ - 1) / chunk_ * chunk_);
  Shape shape = keys_.shape();
  shape[1] = want;
  Tensor k = Tensor::empty(shape, keys_.dtype(), keys_.device());
  Tensor v = Tensor::empty(shape, keys_.dtype(), keys_.device());
  if (length_ > 0) {
    copy_(k.narrow(1, 0, length_), keys());
    copy_(v.narrow(1, 0, length_), values());
  }
  keys_ = std::move(k);
  values_ = std::move(v);
}

void KvCache::append(const Tensor& k, const Tensor& v) {
  LN_CHECK(k.defined() && v.defined() && k.dim() == 4 && v.shape() == k.shape(),
           "[kv_cache] expects k and v (B, n, H, D) of one shape, got k ", shape_str(k.defined() ? k.shape() : Shape{}),
           ", v ", shape_str(v.defined() ? v.shape() : Shape{}));
  const int64_t n = k.size(1);
  LN_CHECK(length_ + n <= max_length_, "[kv_cache] ", n, " new rows after ", length_, " exceed max_length ",
           max_length_);
  if (!keys_.defined()) {
    const Shape shape{k.size(0), 0, k.size(2), k.size(3)};
    keys_ = Tensor::empty(shape, ops::kernel_dtype(k), k.device());
    values_ = Tensor::empty(shape, keys_.dtype(), k.device());
  }
  LN_CHECK(k.size(0) == keys_.size(0) && k.size(2) == keys_.size(2) && k.size(3) == keys_.size(3),
           "[kv_cache] rows ", shape_str(k.shape()), " do not match the cache's (B, H, D) = (", keys_.size(0), ", ",
           keys_.size(2), ", ", keys_.size(3), ")");
  LN_CHECK(k.device() == keys_.device(), "[kv_cache] rows on ", k.device().str(), " but the cache is on ",
           keys_.device().str());
  reserve(length_ + n);
  copy_(keys_.narrow(1, length_, n), k);
  copy_(values_.narrow(1, length_, n), v);
  length_ += n;
}

void KvCache::clear() {
  length_ = 0;
  extra_.reset();
}

void KvCache::throw_extra_mismatch() {
  LN_FAIL("[kv_cache] holds the state of another core; use one cache per layer and core");
}

AttentionResult AttentionCore::decode(const Tensor&, const Tensor&, const Tensor&, KvCache&) {
  LN_FAIL("[", name(), "] does not support decoding with a KV cache");
}

namespace decode_detail {

DecodeStep begin_decode(const char* core, const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache) {
  check_core_inputs(core, q, k, v, {}, false);
  LN_CHECK(q.size(1) > 0, "[", core, "] decode needs at least one new row, got q ", shape_str(q.shape()));
  DecodeStep s;
  s.start = cache.length();
  cache.append(k, v);
  s.end = cache.length();
  s.q = cast(q, cache.key_storage().dtype()).contiguous();
  return s;
}

AttentionResult finish_decode(const Tensor& q, const AttentionOutput& r) {
  return {cast(r.out, q.dtype()), r.lse, Tensor()};
}

}  // namespace decode_detail

using decode_detail::begin_decode;
using decode_detail::finish_decode;

namespace {

// Keys per split of a single-row dense step: one query row gives the attention kernels one tile
// per (batch, head), too little parallel work for a long cache; splitting the keys into this many
// per batch entry and merging the splits by log-sum-exp (flash-decoding) spreads it.
constexpr int64_t kDenseSplitKeys = 1024;

// One query row (B, 1, H, D) against keys, values (B, L, H, D), all visible, L >= 2 splits: the
// splits as an extra batch dim of one call, the remainder in a second, merged exactly by LSE.
AttentionOutput split_key_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& p) {
  const int64_t b = q.size(0), heads = q.size(2), d = q.size(3), len = k.size(1);
  const int64_t splits = len / kDenseSplitKeys, whole = splits * kDenseSplitKeys;
  auto split = [&](const Tensor& t) { return t.narrow(1, 0, whole).view({b, splits, kDenseSplitKeys, heads, d}); };
  const AttentionOutput parts = attention_forward(q.unsqueeze(1).expand({b, splits, 1, heads, d}), split(k), split(v), p);
  Tensor outs = cast(parts.out, DType::F32), lses = parts.lse;  // (B, S, 1, H, D), (B, S, H, 1)
  if (whole < len) {
    const AttentionOutput rest = attention_forward(q, k.narrow(1, whole, len - whole), v.narrow(1, whole, len - whole), p);
    outs = cat({outs, cast(rest.out, DType::F32).unsqueeze(1)}, 1);
    lses = cat({lses, rest.lse.unsqueeze(1)}, 1);
  }
  lses = cast(lses, DType::F32);
  const Tensor total = logsumexp(lses, {1}, true);                                     // (B, 1, H, 1)
  const Tensor weights = exp(sub(lses, total)).permute({0, 1, 3, 2}).unsqueeze(4);  // (B, S, 1, H, 1)
  return {sum(mul(outs, weights), {1}), cast(total.squeeze(1), parts.lse.dtype())};
}

}  // namespace

AttentionResult DenseAttention::decode(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache) {
  NoGradGuard no_grad;
  const auto s = begin_decode("dense", q, k, v, cache);
  AttentionParams p;
  p.scale = scale_;
  if (s.end - s.start == 1 && s.end >= 2 * kDenseSplitKeys) {
    return finish_decode(q, split_key_attention(s.q, cache.keys(), cache.values(), p));  // every key is visible
  }
  p.causal = true;
  p.causal_offset = s.start;
  return finish_decode(q, attention_forward(s.q, cache.keys(), cache.values(), p));
}

namespace {

// Rows first, first + rate, ... (count of them) along dim 1 of x (B, N, H, D), and heads g, g + rate, ...
Tensor strided_rows(const Tensor& x, int64_t first, int64_t count, int64_t rate, int64_t g) {
  const int64_t span = (count - 1) * rate + 1;
  return x.narrow(1, first, span).slice(1, 0, span, rate).slice(2, g, x.size(2), rate);
}

// The same rows of lse (B, H, N) (rows on dim 2, heads on dim 1).
Tensor strided_stats(const Tensor& lse, int64_t first, int64_t count, int64_t rate, int64_t g) {
  const int64_t span = (count - 1) * rate + 1;
  return lse.narrow(2, first, span).slice(2, 0, span, rate).slice(1, g, lse.size(1), rate);
}

}  // namespace

AttentionResult DilatedAttention::decode(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache) {
  NoGradGuard no_grad;
  const auto s = begin_decode("dilated", q, k, v, cache);
  const Tensor keys = cache.keys(), values = cache.values();
  const int64_t b = q.size(0), n = q.size(1), heads = q.size(2);
  const DType dt = s.q.dtype(), st = dt == DType::F64 ? DType::F64 : DType::F32;
  AttentionParams p;
  p.scale = scale_;
  p.causal = true;
  AttentionOutput merged;
  for (size_t br = 0; br < segment_lengths_.size(); ++br) {
    // The forward clamps w to the sequence length; a segment longer than the sequence holds the
    // same rows at the same offsets, so the unclamped w gives the same pattern for every length.
    const int64_t w = segment_lengths_[br], r = dilation_rates_[br];
    AttentionOutput part{zeros(q.shape(), dt, q.device()),
                         full({b, heads, n}, -std::numeric_limits<double>::infinity(), st, q.device())};
    for (int64_t base = s.start / w * w; base < s.end; base += w) {
      // New rows of this segment: offsets [lo, hi) inside it.
      const int64_t lo = std::max(s.start, base) - base, hi = std::min(s.end, base + w) - base;
      for (int64_t g = 0; g < std::min(r, heads) && g < hi; ++g) {
        // Rows g + t * r of the segment; the new ones are t in [t0, t1), the keys t in [0, t1).
        const int64_t t0 = lo <= g ? 0 : (lo - g + r - 1) / r, t1 = (hi - 1 - g) / r + 1;
        if (t0 >= t1) continue;
        const int64_t first = base + g + t0 * r - s.start, count = t1 - t0;
        p.causal_offset = t0;
        attention_forward_into(strided_rows(s.q, first, count, r, g), strided_rows(keys, base + g, t1, r, g),
                               strided_rows(values, base + g, t1, r, g), p,
                               strided_rows(part.out, first, count, r, g),
                               strided_stats(part.lse, first, count, r, g));
      }
    }
    // Merged pairwise in branch order, as the forward does.
    merged = merged.out.defined() ? merge_attention({merged, part}) : part;
  }
  return finish_decode(q, merged);
}

}  // namespace longnet
