#pragma once
// Pictures of what an attention core attends to. The (query, key) pairs are read off the core's
// own forward pass, not re-derived from its rule: with v_j the one-hot vector of key j, a query's
// output is its row of attention probabilities, nonzero exactly on the keys it sees. For a dilated
// schedule every branch (w_i, r_i) is probed as a core of its own, so the picture can say which
// branch covers a pair; their union is checked against the whole core.
#include <cstdint>
#include <string>
#include <vector>

#include "layers/attention/core.h"

namespace longnet {

/// What to draw: a core built from the registry by name and config, over one sequence.
struct PatternSpec {
  std::string core = "dilated";
  AttentionConfig config;
  int64_t seq_len = 64;
  /// The heads shown, one panel each (the probe runs max(heads) + 1 heads).
  std::vector<int64_t> heads{0};
  bool causal = false;
  /// Seed of the probe's q and k (the adaptive core routes on them; the others ignore their values).
  uint64_t input_seed = 0;
};

/// The attended pairs of some heads of a core, split into branches (a dilated schedule's (w, r)
/// pairs; one branch for the other cores).
struct AttentionPattern {
  /// The core's name and parameters, and the sequence (for titles).
  std::string core_label;
  std::string sequence_label;
  int64_t seq_len = 0;
  std::vector<int64_t> heads;
  /// Legend label of each branch.
  std::vector<std::string> branches;
  /// Per shown head, (seq_len, seq_len) row-major by query: 0 where the query does not see the
  /// key, else 1 + the index of the first branch covering the pair.
  std::vector<std::vector<uint8_t>> cover;

  /// Whether query i of the h-th shown head sees key j.
  bool attended(size_t h, int64_t i, int64_t j) const { return cover[h][static_cast<size_t>(i * seq_len + j)] != 0; }
};

/// The attention mask of `core` run on one sequence of n rows and `heads` heads of dim `head_dim`:
/// (heads, n, n) row-major by query, 1 where the query's probability of the key is nonzero.
/// q and k are small random draws from `seed`; costs ceil(n / head_dim) forward passes.
std::vector<uint8_t> probe_attention_mask(AttentionCore& core, int64_t n, int64_t heads, bool causal, int64_t head_dim,
                                          uint64_t seed);

/// The pattern of `spec`. Throws for an unknown core, a bad config, seq_len < 1 or out of
/// range heads.
AttentionPattern attention_pattern(const PatternSpec& spec);

/// An SVG picture of `pattern`: one panel per head, queries down, keys across; above max_cells
/// positions a cell covers several and is shaded by the fraction of its pairs that are attended,
/// in the colour of the branch that covers most of them.
std::string pattern_svg(const AttentionPattern& pattern, int64_t max_cells = 128);

}  // namespace longnet
