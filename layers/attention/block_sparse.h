#pragma once
// Block-sparse attention: a fixed pattern of key blocks per query block, one flash kernel.
#include "layers/attention/core.h"

namespace longnet {

/// Attention restricted to the key blocks of a pattern (see make_block_layout), exact within them:
/// equal to dense attention whose mask is the layout's blocks (and the causal mask when causal).
class BlockSparseAttention final : public AttentionCore {
 public:
  explicit BlockSparseAttention(const AttentionConfig& config);
  std::string name() const override { return "block_sparse"; }
  AttentionResult forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) override;
  /// Causal decoding against a KV cache (see AttentionCore::decode).
  AttentionResult decode(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache) override;

  /// The layout used for n rows and `heads` heads (the last one is kept for the next call).
  std::shared_ptr<const AttentionLayout> layout(int64_t n, int64_t heads, bool causal);

 private:
  std::optional<double> scale_;
  int64_t block_size_;
  BlockPattern pattern_;
  struct Cached {
    int64_t n = -1, heads = -1;
    bool causal = false;
    std::shared_ptr<const AttentionLayout> layout;
  } cached_;
};

}  // namespace longnet
