#include "tools/longnet/model_flops.h"

#include <algorithm>
#include <memory>

#include "layers/attention/adaptive.h"
#include "layers/attention/block_sparse.h"

namespace longnet::tools {

namespace {

// Causal pairs of a dense square block of m rows (the diagonal included).
double causal_pairs(double m) { return m * (m + 1.0) / 2.0; }

}  // namespace

double attended_pairs(const std::string& core, const AttentionConfig& c, int64_t n, int64_t heads) {
  const double nd = static_cast<double>(n);
  if (core == "dense") return static_cast<double>(heads) * causal_pairs(nd);
  if (core == "dilated") {
    // Per branch (w, r) and head h: each full segment keeps the rows h mod r, h mod r + r, ...,
    // which attend to each other causally; the shorter last segment likewise.
    double pairs = 0.0;
    for (size_t b = 0; b < c.segment_lengths.size(); ++b) {
      const int64_t w = std::min(c.segment_lengths[b], n), r = c.dilation_rates[b];
      const int64_t full = n / w, tail = n % w;
      const auto kept = [r](int64_t rows, int64_t offset) { return offset < rows ? (rows - offset + r - 1) / r : 0; };
      for (int64_t h = 0; h < heads; ++h) {
        pairs += static_cast<double>(full) * causal_pairs(static_cast<double>(kept(w, h % r))) +
                 causal_pairs(static_cast<double>(kept(tail, h % r)));
      }
    }
    return pairs;
  }
  const double bs = static_cast<double>(c.block_size);
  const int64_t blocks = (n + c.block_size - 1) / c.block_size;
  // Off-diagonal blocks are full; the diagonal block is causal.
  const auto block_pairs = [&](double listed_blocks) { return (listed_blocks - 1.0) * bs * bs + causal_pairs(bs); };
  if (core == "block_sparse") {
    BlockSparseAttention sparse(c);
    const std::shared_ptr<const AttentionLayout> layout = sparse.layout(n, heads, true);
    const double groups = static_cast<double>(layout->batch * layout->heads * layout->query_blocks);
    const double per_group = static_cast<double>(layout->entries()) / groups;
    return static_cast<double>(heads) * static_cast<double>(blocks) * block_pairs(per_group);
  }
  if (core == "adaptive") {
    AdaptiveAttention adaptive(c);
    const int64_t k = adaptive.kept_blocks(blocks);
    double listed = 0.0;
    for (int64_t i = 0; i < blocks; ++i) listed += block_pairs(static_cast<double>(std::min(k, i + 1)));
    return static_cast<double>(heads) * listed;
  }
  return static_cast<double>(heads) * causal_pairs(nd);  // a registered core of unknown shape: dense
}

double attention_training_flops(const longnet::ModelConfig& config, int64_t batch, int64_t n) {
  return static_cast<double>(config.layers) * static_cast<double>(batch) * (1.0 + kAttentionBackwardFactor) * 4.0 *
         static_cast<double>(config.head_dim()) * attended_pairs(config.attention, config.attention_config, n, config.heads);
}

double training_step_flops(const longnet::ModelConfig& config, int64_t parameters, int64_t batch, int64_t n) {
  return 6.0 * static_cast<double>(parameters) * static_cast<double>(batch * n) + attention_training_flops(config, batch, n);
}

}  // namespace longnet::tools
