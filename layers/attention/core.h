#pragma once
// The attention cores: one interface, q, k, v (B, N, H, D) -> out (B, N, H, D) and lse (B, H, N),
// and a registry that builds a core from its config name. Every core is exact: its output equals
// dense attention under the core's mask (for `dilated`, keys seen by several branches count once
// per branch, LongNet's Eq. 10), and gradients flow through out and lse alike.
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "framework/ops/attention.h"

namespace longnet {

class KvCache;

/// Per-call options shared by every core.
struct AttentionOptions {
  /// Query i sees only keys at positions <= its own.
  bool causal = false;
  /// (B, Nk) bool, true where a key is padding; or undefined.
  Tensor key_padding_mask;
};

/// A core's result: out (B, N, H, D), lse (B, H, N), and for cores that add a loss term (the
/// adaptive core's sparsity regulariser) that scalar, else undefined.
struct AttentionResult {
  Tensor out;
  Tensor lse;
  Tensor aux_loss;
};

/// Which key blocks a block-sparse core visits. Distances are in blocks; "past" means lower block
/// indices (with causal attention only past and diagonal blocks remain).
struct BlockPattern {
  /// local | dilated | global_local | random | hierarchical | user
  std::string kind = "local";
  /// local, global_local, hierarchical: blocks visited on each side; dilated: steps on each side.
  int64_t window = 1;
  /// dilated: distance between visited blocks.
  int64_t dilation = 2;
  /// global_local, hierarchical: the first blocks, which every query sees and which see every key.
  int64_t global_blocks = 1;
  /// random: blocks drawn per (head, query block) besides the diagonal.
  int64_t random_blocks = 2;
  /// random: seed of the draws (each head draws its own).
  uint64_t seed = 0;
  /// hierarchical: number of scales; scale l visits every factor^l-th block within window * factor^l.
  int64_t levels = 2;
  int64_t level_factor = 4;
  /// user: the layout itself (it must fit the sequence).
  std::shared_ptr<const AttentionLayout> user_layout;
};

/// Parameters of every core (each reads its own).
struct AttentionConfig {
  /// Multiplies q.k; 1/sqrt(D) when unset.
  std::optional<double> scale;
  /// dilated: segment lengths w_i and dilation rates r_i, pairwise (the paper's schedule).
  std::vector<int64_t> segment_lengths{2048, 4096, 8192, 16384, 32768};
  std::vector<int64_t> dilation_rates{1, 2, 4, 6, 12};
  /// block_sparse, adaptive: rows per block.
  int64_t block_size = 64;
  /// block_sparse: the pattern.
  BlockPattern pattern;
  /// adaptive: fraction of key blocks left out per query block (top-k keeps the rest).
  double sparsity = 0.9;
  /// adaptive: head dim of q and k (the scorer's input) and the scorer's projection width.
  int64_t head_dim = 64;
  int64_t scorer_dim = 16;
  /// adaptive: weight of the sparsity regulariser (0: none returned).
  double regularizer = 0.0;
  /// adaptive: seed of the scorer's initial weights and their dtype.
  uint64_t seed = 0;
  DType param_dtype = DType::F32;
};

/// An attention core. Self-attention cores (all but dense) need N == Nk.
class AttentionCore {
 public:
  virtual ~AttentionCore() = default;
  /// The registry name ("dense", "dilated", ...).
  virtual std::string name() const = 0;
  /// q (B, N, H, D), k and v (B, Nk, H, D) -> out (B, N, H, D), lse (B, H, N); differentiable.
  virtual AttentionResult forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionOptions& options) = 0;
  /// Learnable tensors (the adaptive core's scorer); none for the fixed-pattern cores.
  virtual std::vector<Tensor> parameters() const { return {}; }
  /// Causal self-attention of new rows against a KV cache, for inference (not recorded): q, k, v
  /// (B, n, H, D) are the rows at positions cache.length() .. cache.length() + n - 1 (a prefill
  /// chunk, or n = 1 per decoding step). Appends k and v to the cache and returns out (B, n, H, D)
  /// and lse (B, H, n): the rows that the causal forward over cache.max_length() positions gives
  /// at those positions. Cores that cannot decode throw (see layers/attention/decode.h).
  virtual AttentionResult decode(const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache);
};

/// Builds a core from a config.
using AttentionCoreFactory = std::function<std::unique_ptr<AttentionCore>(const AttentionConfig&)>;

/// The core registered under `name`: dense, dilated, block_sparse, adaptive, or one added with
/// register_attention_core. Throws naming the known cores for an unknown name.
std::unique_ptr<AttentionCore> make_attention_core(const std::string& name, const AttentionConfig& config = {});
/// Adds (or replaces) a core under `name` (for example a ring core wrapping another).
void register_attention_core(const std::string& name, AttentionCoreFactory factory);
/// Every registered name, sorted.
std::vector<std::string> attention_core_names();

/// Checks q, k, v of a core: (B, N, H, D) and (B, Nk, H, D), N == Nk unless `cross_ok`, and the
/// padding mask (B, Nk). Throws naming `core`.
void check_core_inputs(const char* core, const Tensor& q, const Tensor& k, const Tensor& v,
                       const AttentionOptions& options, bool cross_ok);

}  // namespace longnet
