#pragma once
// Dense attention: every query sees every (unpadded, and with causal, not future) key.
#include "layers/attention/core.h"

namespace longnet {

/// Flash attention over all keys. With N < Nk (decoding against cached keys) the queries are the
/// last N positions: causal query i sees keys j <= i + Nk - N.
class DenseAttention final : public AttentionCore {
 public:
  explicit DenseAttention(const AttentionConfig& config) : scale_(config.scale) {}
  std::string name() const override { return "dense"; }
  AttentionResult forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) override;
  /// Causal decoding against a KV cache (see AttentionCore::decode).
  AttentionResult decode(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache) override;

 private:
  std::optional<double> scale_;
};

}  // namespace longnet
