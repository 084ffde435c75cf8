#pragma once
// Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus), CTRL's
// repetition penalty; seeded, with one random stream per sequence of a batch.
//
// Order of the steps (as in common samplers): repetition penalty on the raw logits, then greedy
// (temperature 0) or logits / temperature, top-k, top-p on the renormalised survivors, and one
// draw. Ties are broken towards the lower token id everywhere (argmax, top-k's cut, top-p's order).
#include <cstdint>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet {

/// How next tokens are chosen.
struct SamplingConfig {
  /// 0: greedy (the most likely token). Otherwise the logits are divided by it before the draw.
  double temperature = 1.0;
  /// Only the k most likely tokens may be drawn (0: no limit).
  int64_t top_k = 0;
  /// Only the smallest set of most likely tokens whose probability reaches top_p may be drawn
  /// (1: no limit). In (0, 1].
  double top_p = 1.0;
  /// CTRL's penalty (Keskar et al. 2019) on every token already in the sequence (prompt
  /// included): a positive logit is divided by it, a negative one multiplied (1: none).
  double repetition_penalty = 1.0;
  /// Seed of the draws: the same seed, logits and streams give the same tokens.
  uint64_t seed = 0;
};

/// Throws naming the field when a config is out of range.
void check_sampling_config(const SamplingConfig& config);

/// `logits` of one sequence with CTRL's penalty applied to every token in `seen` (each once,
/// however often it occurs); ids outside the vocabulary are an error.
std::vector<float> apply_repetition_penalty(std::vector<float> logits, const std::vector<int64_t>& seen,
                                            double penalty);

/// The distribution a draw samples from for one sequence's (already penalised) logits: zero
/// outside the tokens that temperature 0 (one token), top-k and top-p leave, renormalised inside.
std::vector<double> sampling_distribution(const std::vector<float>& logits, const SamplingConfig& config);

/// Chooses next tokens for a batch. Row b draws its n-th token (n counted from 0 over the rows'
/// own draws) from the Philox counter (stream_b << 32) + n under the seed, so its tokens depend
/// only on its own logits, its stream and the seed: not on the other rows, nor on the steps at
/// which it did not draw.
class Sampler {
 public:
  /// `streams[b]` numbers row b's random stream (empty: 0, 1, ..., B - 1).
  explicit Sampler(const SamplingConfig& config, std::vector<uint64_t> streams = {});

  /// logits (B, V) of any float dtype on any device; history[b] the tokens of sequence b so far
  /// (for the repetition penalty; empty: none). Draws one token for every row b with active[b]
  /// (every row when `active` is empty); the other rows get -1 and do not advance.
  std::vector<int64_t> sample(const Tensor& logits, const std::vector<std::vector<int64_t>>& history,
                              const std::vector<bool>& active = {});

  const SamplingConfig& config() const { return config_; }
  /// Tokens drawn so far for row b.
  uint64_t draws(int64_t b) const;

 private:
  SamplingConfig config_;
  std::vector<uint64_t> streams_;
  std::vector<uint64_t> draws_;
};

}  // namespace longnet
