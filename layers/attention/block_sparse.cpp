#include "layers/attention/block_sparse.h"

#include "layers/attention/block_layouts.h"

namespace longnet {

BlockSparseAttention::BlockSparseAttention(const AttentionConfig& config)
    : scale_(config.scale), block_size_(config.block_size), pattern_(config.pattern) {
  LN_CHECK(block_size_ > 0, "[block_sparse] block size must be positive, got ", block_size_);
}

std::shared_ptr<const AttentionLayout> BlockSparseAttention::layout(int64_t n, int64_t heads, bool causal) {
  if (!cached_.layout || cached_.n != n || cached_.heads != heads || cached_.causal != causal) {
    cached_ = {n, heads, causal,
               std::make_shared<const AttentionLayout>(make_block_layout(pattern_, block_size_, n, heads, causal))};
  }
  return cached_.layout;
}

AttentionResult BlockSparseAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                              const AttentionOptions& options) {
  check_core_inputs("block_sparse", q, k, v, options, false);
  AttentionParams p;
  p.scale = scale_;
  p.causal = options.causal;
  p.key_padding_mask = options.key_padding_mask;
  p.layout = layout(q.size(1), q.size(2), options.causal);
  const AttentionOutput r = attention(q, k, v, p);
  return {r.out, r.lse, Tensor()};
}

}  // namespace longnet
