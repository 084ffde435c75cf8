#pragma once
// Content-adaptive block-sparse attention: a small learned scorer picks the key blocks.
#include "layers/attention/core.h"

namespace longnet {

/// Per (batch element, head, query block), a scorer over mean-pooled blocks,
/// score(i, j) = (q_i W_q) . (k_j W_k) / sqrt(scorer_dim) with k_j the block mean of k and q_i the
/// block mean of q, keeps the diagonal block and the top-scored others, k = round((1 - sparsity) *
/// blocks) in all (fewer when causal leaves fewer). Causal, the choice reads no position later than
/// any row of the block: q_i is the mean of query block i - 1 and the first row of block i (block
/// 0: its first row alone), the candidates are the key blocks before i, which lie wholly before the
/// block, and the diagonal is kept without being ranked (its score, which sees later keys, reaches
/// only the straight-through gate's gradient and the regulariser, never the output). Attention is exact within the chosen blocks, so q, k and v get
/// the gradients of dense attention under that block mask. The scorer learns through a
/// straight-through gate: each chosen block's unnormalised weights exp(S) are multiplied by
/// w / stop_grad(w) with w = sigmoid(score), which is 1 in the forward (a zero score bias
/// log w - stop_grad(log w)); its gradient is the block's summed score gradient / w. The pooled
/// inputs are detached: the scorer routes, it does not reshape q and k.
/// With regularizer > 0 the result's aux_loss is regularizer * the mean over query blocks of
/// (mean gate over the blocks it may see - the fraction it keeps)^2.
class AdaptiveAttention final : public AttentionCore {
 public:
  explicit AdaptiveAttention(const AttentionConfig& config);
  std::string name() const override { return "adaptive"; }
  AttentionResult forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) override;
  /// Causal decoding against a KV cache (see AttentionCore::decode).
  AttentionResult decode(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache) override;
  /// W_q and W_k, each (head_dim, scorer_dim), on the default device at construction (q, k, v
  /// must be on the same one).
  std::vector<Tensor> parameters() const override { return {w_q_, w_k_}; }

  /// The layout the last forward chose (one group per batch element and head).
  std::shared_ptr<const AttentionLayout> last_layout() const { return last_layout_; }
  /// Key blocks kept per query block for `blocks` blocks (before the causal limit).
  int64_t kept_blocks(int64_t blocks) const;

 private:
  std::optional<double> scale_;
  int64_t block_size_;
  double sparsity_;
  double regularizer_;
  Tensor w_q_, w_k_;
  std::shared_ptr<const AttentionLayout> last_layout_;
};

}  // namespace longnet
