#pragma once
// LongNet dilated attention (Ding et al. 2023).
#include "layers/attention/core.h"

namespace longnet {

/// For each pair (w_i, r_i) of the schedule: the sequence is cut into segments of w_i rows
/// (w_i > N is clamped to N; when N is not a multiple of w_i the last segment is shorter, which
/// equals padding it with masked rows); in every segment the rows offset, offset + r_i, ... with
/// offset = head mod r_i attend densely to each other (causally when causal); the branches' results
/// are merged by log-sum-exp, with exact gradients through the merge weights. Each branch reads q,
/// k, v through strided views on the CPU; on the GPU each branch is gathered into a batch of dense
/// segments for one fused call (where the schedule allows, see dilated.cpp); memory is O(N).
class DilatedAttention final : public AttentionCore {
 public:
  explicit DilatedAttention(const AttentionConfig& config);
  std::string name() const override { return "dilated"; }
  AttentionResult forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) override;
  /// Causal decoding against a KV cache (see AttentionCore::decode).
  AttentionResult decode(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache) override;

  const std::vector<int64_t>& segment_lengths() const { return segment_lengths_; }
  const std::vector<int64_t>& dilation_rates() const { return dilation_rates_; }

 private:
  std::optional<double> scale_;
  std::vector<int64_t> segment_lengths_, dilation_rates_;
};

}  // namespace longnet
