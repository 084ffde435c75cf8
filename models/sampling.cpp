#include "models/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <span>

#include "framework/core/error.h"
#include "framework/core/rng.h"
#include "framework/ops/copy.h"

namespace longnet {
namespace {

// A uniform double in [0, 1) with 53 random bits from two Philox words.
double uniform53(const uint32_t w[4]) {
  const uint64_t bits = (static_cast<uint64_t>(w[0]) << 21) | (w[1] >> 11);
  return static_cast<double>(bits) * 0x1.0p-53;
}

// The token greedy decoding picks: the largest logit, the lowest id among equals. Checks the
// logits as sampling_distribution does and returns how many are finite through `finite`.
size_t most_likely(std::span<const float> logits, size_t& finite) {
  finite = 0;
  size_t best = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float l = logits[i];
    LN_CHECK(!std::isnan(l) && l != INFINITY, "[sampling] logits must not be NaN or +inf, got ", l);
    finite += std::isfinite(l) ? 1 : 0;
    if (l > logits[best]) best = i;
  }
  LN_CHECK(finite > 0, "[sampling] no token has a finite logit (vocabulary of ", logits.size(), ")");
  return best;
}

}  // namespace

void check_sampling_config(const SamplingConfig& c) {
  LN_CHECK(std::isfinite(c.temperature) && c.temperature >= 0.0, "[sampling] temperature must be >= 0, got ",
           c.temperature);
  LN_CHECK(c.top_k >= 0, "[sampling] top_k must be >= 0 (0: no limit), got ", c.top_k);
  LN_CHECK(c.top_p > 0.0 && c.top_p <= 1.0, "[sampling] top_p must be in (0, 1], got ", c.top_p);
  LN_CHECK(std::isfinite(c.repetition_penalty) && c.repetition_penalty > 0.0,
           "[sampling] repetition_penalty must be > 0 (1: none), got ", c.repetition_penalty);
}

std::vector<float> apply_repetition_penalty(std::vector<float> logits, const std::vector<int64_t>& seen,
                                            double penalty) {
  if (penalty == 1.0) return logits;
  const auto v = static_cast<int64_t>(logits.size());
  std::vector<bool> done(logits.size(), false);
  for (int64_t t : seen) {
    LN_CHECK(t >= 0 && t < v, "[sampling] token ", t, " in the history is outside the vocabulary of ", v);
    const auto i = static_cast<size_t>(t);
    if (done[i]) continue;
    done[i] = true;
    logits[i] = static_cast<float>(logits[i] > 0.0f ? logits[i] / penalty : logits[i] * penalty);
  }
  return logits;
}

std::vector<double> sampling_distribution(const std::vector<float>& logits, const SamplingConfig& c) {
  check_sampling_config(c);
  const size_t v = logits.size();
  size_t finite = 0;
  const size_t best = most_likely(logits, finite);
  std::vector<double> p(v, 0.0);
  if (c.temperature == 0.0) {
    p[best] = 1.0;
    return p;
  }
  // Most likely first, lower id first among equals; -inf logits (impossible tokens) last.
  auto before = [&](size_t a, size_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  size_t keep = finite;
  if (c.top_k > 0) keep = std::min(keep, static_cast<size_t>(c.top_k));
  std::vector<size_t> order(v);
  std::iota(order.begin(), order.end(), size_t{0});
  // The cut of top-k and the cumulative sums of top-p need the kept tokens in order.
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep), order.end(), before);
  const double top = logits[order[0]];
  std::vector<double> w(keep);
  double total = 0.0;
  for (size_t r = 0; r < keep; ++r) {
    w[r] = std::exp((logits[order[r]] - top) / c.temperature);
    total += w[r];
  }
  if (c.top_p < 1.0) {
    double cum = 0.0;
    for (size_t r = 0; r < keep; ++r) {
      cum += w[r];
      if (cum >= c.top_p * total) {
        keep = r + 1;
        total = cum;
        break;
      }
    }
  }
  for (size_t r = 0; r < keep; ++r) p[order[r]] = w[r] / total;
  return p;
}

Sampler::Sampler(const SamplingConfig& config, std::vector<uint64_t> streams)
    : config_(config), streams_(std::move(streams)) {
  check_sampling_config(config_);
}

uint64_t Sampler::draws(int64_t b) const {
  return b >= 0 && b < static_cast<int64_t>(draws_.size()) ? draws_[static_cast<size_t>(b)] : 0;
}

std::vector<int64_t> Sampler::sample(const Tensor& logits, const std::vector<std::vector<int64_t>>& history,
                                     const std::vector<bool>& active) {
  LN_CHECK(logits.defined() && logits.dim() == 2 && logits.size(1) > 0, "[sampling] expects logits (B, V), got ",
           logits.defined() ? shape_str(logits.shape()) : std::string("undefined"));
  const int64_t b = logits.size(0), v = logits.size(1);
  const auto batch = static_cast<size_t>(b);
  LN_CHECK(history.empty() || history.size() == batch, "[sampling] ", history.size(), " histories for a batch of ", b);
  LN_CHECK(active.empty() || active.size() == batch, "[sampling] ", active.size(), " active flags for a batch of ", b);
  LN_CHECK(streams_.empty() || streams_.size() == batch, "[sampling] ", streams_.size(), " random streams for a batch of ",
           b);
  if (draws_.size() < batch) draws_.resize(batch, 0);
  const std::vector<float> all = cast(logits, DType::F32).to(Device::cpu()).contiguous().to_vector<float>();
  std::vector<int64_t> tokens(batch, -1);
  for (size_t r = 0; r < batch; ++r) {
    if (!active.empty() && !active[r]) continue;
    const std::span<const float> raw(all.data() + static_cast<std::ptrdiff_t>(r) * v, static_cast<size_t>(v));
    const bool penalised = !history.empty() && config_.repetition_penalty != 1.0;
    if (config_.temperature == 0.0 && !penalised) {  // greedy: one pass over the row, no distribution
      size_t finite = 0;
      tokens[r] = static_cast<int64_t>(most_likely(raw, finite));
      ++draws_[r];
      continue;
    }
    std::vector<float> row(raw.begin(), raw.end());
    if (penalised) row = apply_repetition_penalty(std::move(row), history[r], config_.repetition_penalty);
    const std::vector<double> p = sampling_distribution(row, config_);
    const uint64_t stream = streams_.empty() ? r : streams_[r];
    uint32_t words[4];
    philox_words(config_.seed, (stream << 32) + draws_[r]++, words);
    const double u = uniform53(words);
    // Inverse CDF over token ids; the last possible token takes what rounding leaves above 1.
    double acc = 0.0;
    for (int64_t t = 0; t < v; ++t) {
      const double pt = p[static_cast<size_t>(t)];
      if (pt == 0.0) continue;
      tokens[r] = t;
      acc += pt;
      if (u < acc) break;
    }
  }
  return tokens;
}

}  // namespace longnet
