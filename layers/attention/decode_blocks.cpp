// The decode step of the block cores (block_sparse, adaptive): per query block, the listed key
// blocks are gathered from the cache and attended with the diagonal block causally masked.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/ops.h"
#include "layers/attention/adaptive.h"
#include "layers/attention/block_sparse.h"
#include "layers/attention/decode_step.h"

namespace longnet {
namespace {

using decode_detail::begin_decode;
using decode_detail::DecodeStep;
using decode_detail::finish_decode;

// The key blocks each layout group (batch-major, then head; `batch` and `heads` are 1 when shared)
// lists for one query block, ascending.
struct BlockLists {
  int64_t batch = 1, heads = 1;
  std::vector<std::vector<int64_t>> rows;
};

// Attention of the query rows [e - q.size(1), e) of query block i, q (B, nq, H, D), over the key
// blocks `lists` names (blocks after i are ignored). The gathered keys are the past blocks of the
// longest list in list order (shorter lists leave filler slots that their layout rows skip), then
// the diagonal block's rows up to e - 1 in the last slot, so that aligning the last query with the
// last key masks exactly the future inside the diagonal block.
AttentionOutput attend_listed_blocks(const Tensor& q, const KvCache& cache, int64_t block, int64_t i, int64_t e,
                                     const BlockLists& lists, std::optional<double> scale) {
  const int64_t b = q.size(0), nq = q.size(1), heads = q.size(2), d = q.size(3), cap = cache.capacity();
  // Per group: its past blocks (slots 0, 1, ...) and whether it lists the diagonal (slot `past`).
  std::vector<std::vector<int64_t>> pasts;
  std::vector<bool> diagonal;
  int64_t past = 0;
  for (const auto& r : lists.rows) {
    pasts.emplace_back();
    for (int64_t j : r) {
      if (j < i) pasts.back().push_back(j);
    }
    diagonal.push_back(std::find(r.begin(), r.end(), i) != r.end());
    past = std::max(past, static_cast<int64_t>(pasts.back().size()));
  }
  std::vector<std::vector<int64_t>> layout_rows;
  for (size_t g = 0; g < pasts.size(); ++g) {
    std::vector<int64_t> slots(pasts[g].size());
    std::iota(slots.begin(), slots.end(), 0);
    if (diagonal[g]) slots.push_back(past);
    layout_rows.push_back(std::move(slots));
  }
  const int64_t nk = past * block + (e - i * block);
  std::vector<int64_t> index(static_cast<size_t>(b * nk * heads));
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t h = 0; h < heads; ++h) {
      const auto& p = pasts[static_cast<size_t>((lists.batch == 1 ? 0 : bi) * lists.heads + (lists.heads == 1 ? 0 : h))];
      for (int64_t row = 0; row < nk; ++row) {
        const auto slot = static_cast<size_t>(row / block);
        // Filler slots (a group with fewer past blocks) read row 0: no layout row lists them.
        const int64_t key_block = slot == static_cast<size_t>(past) ? i : slot < p.size() ? p[slot] : -1;
        const int64_t pos = key_block < 0 ? 0 : key_block * block + row % block;
        index[static_cast<size_t>((bi * nk + row) * heads + h)] = (bi * cap + pos) * heads + h;
      }
    }
  }
  const Tensor idx = from_vector(index, {static_cast<int64_t>(index.size())}, q.device());
  auto gather_rows = [&](const Tensor& storage) {
    return index_select(storage.view({b * cap * heads, d}), 0, idx).view({b, nk, heads, d});
  };
  AttentionParams p;
  p.scale = scale;
  p.causal = true;
  p.causal_offset = nk - nq;
  p.layout = std::make_shared<const AttentionLayout>(
      AttentionLayout::from_rows(block, lists.batch, lists.heads, 1, past + 1, std::move(layout_rows)));
  return attention_forward(q, gather_rows(cache.key_storage()), gather_rows(cache.value_storage()), p);
}

// Runs `rows_of_block(i, a, e)` (the result for new rows [a, e) of query block i) for every query
// block the step's rows touch, in order, and joins the results along the rows.
AttentionOutput over_query_blocks(const DecodeStep& s, int64_t block,
                                  const std::function<AttentionOutput(int64_t i, int64_t a, int64_t e)>& rows_of_block) {
  std::vector<Tensor> outs, lses;
  for (int64_t i = s.start / block; i * block < s.end; ++i) {
    const int64_t a = std::max(s.start, i * block), e = std::min(s.end, (i + 1) * block);
    const AttentionOutput r = rows_of_block(i, a, e);
    outs.push_back(r.out);
    lses.push_back(r.lse);
  }
  if (outs.size() == 1) return {outs[0], lses[0]};
  return {cat(outs, 1), cat(lses, 2)};
}

}  // namespace

AttentionResult BlockSparseAttention::decode(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache) {
  NoGradGuard no_grad;
  const DecodeStep s = begin_decode("block_sparse", q, k, v, cache);
  const int64_t heads = q.size(2);
  // Causal layouts list for block i the same blocks at every length except for the random
  // pattern, whose draws follow the block count: route as the forward over max_length().
  const auto l = layout(cache.max_length(), heads, true);
  return finish_decode(q, over_query_blocks(s, block_size_, [&](int64_t i, int64_t a, int64_t e) {
    BlockLists lists{l->batch, l->heads, {}};
    for (int64_t lb = 0; lb < l->batch; ++lb) {
      for (int64_t lh = 0; lh < l->heads; ++lh) {
        const int64_t r = l->row(lb, lh, i);
        lists.rows.emplace_back(l->key_block_ids.begin() + l->row_offsets[static_cast<size_t>(r)],
                                l->key_block_ids.begin() + l->row_offsets[static_cast<size_t>(r) + 1]);
      }
    }
    return attend_listed_blocks(s.q.narrow(1, a - s.start, e - a), cache, block_size_, i, e, lists, scale_);
  }));
}

namespace {

// The adaptive core's routing inputs while decoding, in the scorer's dtype.
struct AdaptiveDecodeState final : KvCache::Extra {
  Tensor block_queries;  // (B, block, H, D): the rows of the latest query block seen
  Tensor query_score;    // (B, H, 1, scorer_dim): pooled query of block `query_block` @ W_q
  int64_t query_block = -1;
  Tensor key_scores;     // (B, H, max blocks, scorer_dim): pooled complete key blocks @ W_k
  int64_t scored_key_blocks = 0;
};

}  // namespace

AttentionResult AdaptiveAttention::decode(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache) {
  NoGradGuard no_grad;
  LN_CHECK(q.size(3) == w_q_.size(0), "[adaptive] q ", shape_str(q.shape()), " has head dim ", q.size(3),
           " but the scorer was built for ", w_q_.size(0));
  const DecodeStep s = begin_decode("adaptive", q, k, v, cache);
  const int64_t b = q.size(0), heads = q.size(2), d = q.size(3), bs = block_size_;
  const DType dt = is_reduced_float(q.dtype()) ? DType::F32 : q.dtype();
  const Tensor wq = cast(w_q_, dt), wk = cast(w_k_, dt);
  const int64_t blocks = (cache.max_length() + bs - 1) / bs, keep = kept_blocks(blocks);
  const double inv = 1.0 / std::sqrt(static_cast<double>(w_q_.size(1)));
  AdaptiveDecodeState& st = cache.extra<AdaptiveDecodeState>();
  if (!st.key_scores.defined()) {
    st.block_queries = zeros({b, bs, heads, d}, dt, q.device());
    st.key_scores = zeros({b, heads, blocks, w_k_.size(1)}, dt, q.device());
  }
  const Tensor qd = cast(s.q, dt);

  return finish_decode(q, over_query_blocks(s, bs, [&](int64_t i, int64_t a, int64_t e) {
    const int64_t take = std::min(keep, i + 1) - 1;  // past blocks kept besides the diagonal
    const bool ranked = take > 0 && take < i;
    const Tensor rows = qd.narrow(1, a - s.start, e - a);
    if (a == i * bs) {
      // Block i starts here: the buffer holds all of block i - 1. Pool as the forward does
      // (previous block and this block's first row; block 0: its first row).
      if (ranked) {
        const Tensor first = rows.narrow(1, 0, 1).squeeze(1);  // (B, H, D)
        const Tensor pooled = div(add(sum(st.block_queries, {1}), first), scalar_tensor(static_cast<double>(bs + 1), dt, q.device()));
        st.query_score = matmul(unsqueeze(pooled, 2), wq);  // (B, H, 1, scorer_dim)
        st.query_block = i;
      }
    }
    copy_(st.block_queries.narrow(1, a - i * bs, e - a), rows);

    BlockLists lists{b, heads, {}};
    if (!ranked) {
      std::vector<int64_t> all(static_cast<size_t>(take + 1));
      std::iota(all.begin(), all.end(), take == 0 ? i : 0);
      lists = {1, 1, {all}};
    } else {
      LN_CHECK(st.query_block == i, "[adaptive] decode lost the pooled query of block ", i);
      if (st.scored_key_blocks < i) {
        const int64_t from = st.scored_key_blocks, nb = i - from;
        const Tensor kb = cast(cache.keys().narrow(1, from * bs, nb * bs), dt).view({b, nb, bs, heads, d});
        const Tensor means = permute(div(sum(kb, {2}), scalar_tensor(static_cast<double>(bs), dt, q.device())), {0, 2, 1, 3});  // (B, H, nb, D)
        copy_(st.key_scores.narrow(2, from, nb), matmul(means, wk));
        st.scored_key_blocks = i;
      }
      const Tensor scores = mul(matmul(st.query_score, transpose(st.key_scores.narrow(2, 0, i), 2, 3)), inv);
      const std::vector<double> sv = scores.to_vector<double>();  // (B, H, 1, i)
      for (int64_t r = 0; r < b * heads; ++r) {
        const double* sr = sv.data() + r * i;
        std::vector<int64_t> cand(static_cast<size_t>(i));
        std::iota(cand.begin(), cand.end(), 0);
        // The forward's order: higher score first, ties to the lower block.
        std::partial_sort(cand.begin(), cand.begin() + take, cand.end(),
                          [&](int64_t x, int64_t y) { return sr[x] > sr[y] || (sr[x] == sr[y] && x < y); });
        cand.resize(static_cast<size_t>(take));
        cand.push_back(i);
        std::sort(cand.begin(), cand.end());
        lists.rows.push_back(std::move(cand));
      }
    }
    return attend_listed_blocks(s.q.narrow(1, a - s.start, e - a), cache, bs, i, e, lists, scale_);
  }));
}

}  // namespace longnet
