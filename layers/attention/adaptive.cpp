#include "layers/attention/adaptive.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/ops.h"

namespace longnet {
namespace {

// The row blocks of x (B, N, H, D) as (B, blocks, block, H, D), zero-padded at the end.
Tensor row_blocks(const Tensor& x, int64_t block, int64_t blocks) {
  const int64_t b = x.size(0), n = x.size(1), h = x.size(2), d = x.size(3);
  const Tensor padded = blocks * block == n ? x : cat({x, zeros({b, blocks * block - n, h, d}, x.dtype(), x.device())}, 1);
  return reshape(padded, {b, blocks, block, h, d});
}

// Means of the row blocks of x (B, N, H, D) -> (B, blocks, H, D); the last block may be short.
Tensor block_means(const Tensor& x, int64_t block, int64_t blocks) {
  std::vector<double> counts(static_cast<size_t>(blocks), static_cast<double>(block));
  counts.back() = static_cast<double>(x.size(1) - (blocks - 1) * block);
  return div(sum(row_blocks(x, block, blocks), {2}), cast(from_vector(counts, {1, blocks, 1, 1}, x.device()), x.dtype()));
}

// Causal query pooling (B, N, H, D) -> (B, blocks, H, D): block i pools only rows that every row of
// the block may see, the previous (always full) block and its own first row, so that no row's
// routing reads a later query; block 0 has its first row alone.
Tensor causal_query_means(const Tensor& x, int64_t block, int64_t blocks) {
  const int64_t b = x.size(0), h = x.size(2), d = x.size(3);
  const Tensor rows = row_blocks(x, block, blocks);
  const Tensor first = squeeze(narrow(rows, 2, 0, 1), 2);  // (B, blocks, H, D)
  if (blocks == 1) return first;
  const Tensor before = sum(narrow(rows, 1, 0, blocks - 1), {2});  // sums of blocks 0 .. blocks-2
  const Tensor pooled = cat({zeros({b, 1, h, d}, x.dtype(), x.device()), before}, 1);
  std::vector<double> counts(static_cast<size_t>(blocks), static_cast<double>(block + 1));
  counts.front() = 1.0;
  return div(add(pooled, first), cast(from_vector(counts, {1, blocks, 1, 1}, x.device()), x.dtype()));
}

// log(sigmoid(s)) without overflow: min(s, 0) - log(1 + exp(-|s|)).
Tensor log_sigmoid(const Tensor& s) { return sub(minimum(s, zeros_like(s)), log(add(exp(neg(abs(s))), 1.0))); }

}  // namespace

AdaptiveAttention::AdaptiveAttention(const AttentionConfig& c)
    : scale_(c.scale), block_size_(c.block_size), sparsity_(c.sparsity), regularizer_(c.regularizer) {
  LN_CHECK(block_size_ > 0, "[adaptive] block size must be positive, got ", block_size_);
  LN_CHECK(sparsity_ >= 0.0 && sparsity_ < 1.0, "[adaptive] sparsity must be in [0, 1), got ", sparsity_);
  LN_CHECK(c.head_dim > 0 && c.scorer_dim > 0, "[adaptive] head_dim and scorer_dim must be positive, got ", c.head_dim,
           " and ", c.scorer_dim);
  Generator g(c.seed);
  NoGradGuard no_grad;
  const double init = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
  // Drawn on the host in f64 so that a seed gives the same weights on every device.
  auto draw = [&] {
    return cast(mul(randn({c.head_dim, c.scorer_dim}, DType::F64, Device::cpu(), &g), init), c.param_dtype)
        .to(default_device());
  };
  w_q_ = draw();
  w_k_ = draw();
  w_q_.requires_grad_(true);
  w_k_.requires_grad_(true);
}

int64_t AdaptiveAttention::kept_blocks(int64_t blocks) const {
  return std::max<int64_t>(1, std::llround((1.0 - sparsity_) * static_cast<double>(blocks)));
}

AttentionResult AdaptiveAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                           const AttentionOptions& options) {
  check_core_inputs("adaptive", q, k, v, options, false);
  LN_CHECK(q.size(3) == w_q_.size(0), "[adaptive] q ", shape_str(q.shape()), " has head dim ", q.size(3),
           " but the scorer was built for ", w_q_.size(0));
  LN_CHECK(q.device() == w_q_.device(), "[adaptive] q ", shape_str(q.shape()), " is on ", q.device().str(),
           " but the scorer's parameters are on ", w_q_.device().str(), " (build the core under a DefaultDeviceGuard)");
  const int64_t b = q.size(0), n = q.size(1), h = q.size(2);
  const int64_t blocks = (n + block_size_ - 1) / block_size_;
  const DType dt = is_reduced_float(q.dtype()) ? DType::F32 : q.dtype();
  Tensor qp, kp;
  {
    NoGradGuard no_grad;
    const Tensor qd = cast(q.detach(), dt);
    qp = permute(options.causal ? causal_query_means(qd, block_size_, blocks) : block_means(qd, block_size_, blocks),
                 {0, 2, 1, 3});  // (B, H, blocks, D)
    kp = permute(block_means(cast(k.detach(), dt), block_size_, blocks), {0, 2, 1, 3});
  }
  const double inv = 1.0 / std::sqrt(static_cast<double>(w_q_.size(1)));
  const Tensor scores = mul(matmul(matmul(qp, cast(w_q_, dt)), transpose(matmul(kp, cast(w_k_, dt)), 2, 3)), inv);

  // Top-k per (batch, head, query block) among the blocks it may see, diagonal always kept. The
  // diagonal is never ranked: causal, its pooled keys include keys later than some of its rows,
  // while every earlier key block lies wholly before the query block. The layout is host data (the
  // kernels take it from the host), so the scores come back here.
  const std::vector<double> sv = scores.to_vector<double>();
  const int64_t keep = kept_blocks(blocks);
  std::vector<std::vector<int64_t>> rows;
  std::vector<int64_t> entry_index;  // flat position in scores of every chosen (i, j), in layout order
  std::vector<double> kept_fraction;
  for (int64_t r = 0; r < b * h * blocks; ++r) {
    const int64_t i = r % blocks;
    const int64_t visible = options.causal ? i + 1 : blocks;
    const double* s = sv.data() + r * blocks;
    std::vector<int64_t> cand;
    for (int64_t j = 0; j < visible; ++j) {
      if (j != i) cand.push_back(j);
    }
    const auto take = static_cast<size_t>(std::min(keep, visible) - 1);
    std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(take), cand.end(),
                      [&](int64_t x, int64_t y) { return s[x] > s[y] || (s[x] == s[y] && x < y); });
    cand.resize(take);
    cand.push_back(i);
    std::sort(cand.begin(), cand.end());
    for (int64_t j : cand) entry_index.push_back(r * blocks + j);
    kept_fraction.push_back(static_cast<double>(cand.size()) / static_cast<double>(visible));
    rows.push_back(std::move(cand));
  }
  last_layout_ = std::make_shared<const AttentionLayout>(AttentionLayout::from_rows(block_size_, b, h, blocks, blocks, rows));

  const Tensor chosen = index_select(flatten(scores), 0,
                                    from_vector(entry_index, {static_cast<int64_t>(entry_index.size())}, q.device()));
  const Tensor log_w = log_sigmoid(chosen);
  AttentionParams p;
  p.scale = scale_;
  p.causal = options.causal;
  p.key_padding_mask = options.key_padding_mask;
  p.layout = last_layout_;
  p.block_bias = sub(log_w, log_w.detach());  // exactly 0: the straight-through gate
  const AttentionOutput r = attention(q, k, v, p);

  AttentionResult result{r.out, r.lse, Tensor()};
  if (regularizer_ > 0.0) {
    std::vector<double> visible_mask(static_cast<size_t>(blocks * blocks));
    for (int64_t i = 0; i < blocks; ++i) {
      for (int64_t j = 0; j < blocks; ++j) visible_mask[static_cast<size_t>(i * blocks + j)] = !options.causal || j <= i;
    }
    const Tensor vis = cast(from_vector(visible_mask, {blocks, blocks}, q.device()), dt);
    const Tensor gate_mean = div(sum(mul(sigmoid(scores), vis), {3}), sum(vis, {1}));
    const Tensor target = cast(from_vector(kept_fraction, {b, h, blocks}, q.device()), dt);
    result.aux_loss = mul(mean(pow(sub(gate_mean, target), 2.0)), regularizer_);
  }
  return result;
}

}  // namespace longnet
