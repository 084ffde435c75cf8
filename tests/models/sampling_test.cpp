// Sampling: each filter against a naive reference written here, draws against the distribution
// they define (frequencies), seeds and per-sequence streams, and bad inputs.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "models/sampling.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::error_message;

// softmax(l / t) in f64.
std::vector<double> naive_softmax(const std::vector<float>& l, double t) {
  double m = -INFINITY, z = 0.0;
  for (float x : l) m = std::max(m, static_cast<double>(x));
  std::vector<double> p;
  for (float x : l) p.push_back(std::exp((x - m) / t));
  for (double x : p) z += x;
  for (double& x : p) x /= z;
  return p;
}

// Token frequencies of `draws` single-row samples of `logits`.
std::vector<double> frequencies(const std::vector<float>& logits, const SamplingConfig& c, int draws) {
  Sampler s(c);
  const Tensor t = tensor(logits, {1, static_cast<int64_t>(logits.size())}, Device::cpu());
  std::vector<double> f(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) f[static_cast<size_t>(s.sample(t, {})[0])] += 1.0 / draws;
  return f;
}

SamplingConfig with(double temperature, int64_t top_k = 0, double top_p = 1.0, double penalty = 1.0, uint64_t seed = 0) {
  SamplingConfig c;
  c.temperature = temperature;
  c.top_k = top_k;
  c.top_p = top_p;
  c.repetition_penalty = penalty;
  c.seed = seed;
  return c;
}

const std::vector<float> kLogits{0.5f, 2.0f, -1.0f, 1.5f, 0.0f, 1.9f, -3.0f, 1.0f};

TEST(Sampling, GreedyIsArgmaxWithLowerIdOnTies) {
  const std::vector<float> l{0.1f, 3.0f, -2.0f, 3.0f};
  const auto p = sampling_distribution(l, with(0.0));
  EXPECT_EQ(p, (std::vector<double>{0.0, 1.0, 0.0, 0.0}));
  Sampler s(with(0.0));
  const Tensor t = tensor({0.1f, 3.0f, -2.0f, 3.0f, 5.0f, 1.0f, 7.0f, -1.0f}, {2, 4}, Device::cpu());
  EXPECT_EQ(s.sample(t, {}), (std::vector<int64_t>{1, 2}));
  // The sampler's greedy pass checks the row as the distribution does, skips -inf tokens and
  // still counts the draw.
  EXPECT_EQ(s.sample(tensor({-INFINITY, -1.0f, -1.0f, -INFINITY}, {1, 4}, Device::cpu()), {}),
            (std::vector<int64_t>{1}));
  EXPECT_EQ(s.draws(0), 2u);
  EXPECT_NE(error_message([&] { s.sample(tensor({1.0f, NAN}, {1, 2}, Device::cpu()), {}); }).find("NaN"),
            std::string::npos);
  EXPECT_NE(error_message([&] { s.sample(tensor({-INFINITY, -INFINITY}, {1, 2}, Device::cpu()), {}); })
                .find("no token has a finite logit"),
            std::string::npos);
  // With a repetition penalty greedy takes the penalised logits: 3.0 / 4 falls below 1.0.
  SamplingConfig penalised = with(0.0);
  penalised.repetition_penalty = 4.0;
  Sampler sp(penalised);
  EXPECT_EQ(sp.sample(tensor({3.0f, 1.0f}, {1, 2}, Device::cpu()), {{0}}), (std::vector<int64_t>{1}));
}

TEST(Sampling, TemperatureDistributionAndFrequencies) {
  for (double t : {0.5, 1.0, 2.0}) {
    const auto p = sampling_distribution(kLogits, with(t));
    const auto want = naive_softmax(kLogits, t);
    for (size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(p[i], want[i], 1e-12) << "t " << t << " token " << i;
  }
  // 20000 draws: the standard error of a frequency is below 0.0036.
  const auto f = frequencies(kLogits, with(1.0), 20000);
  const auto want = naive_softmax(kLogits, 1.0);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], want[i], 0.015) << "token " << i;
}

TEST(Sampling, TopKKeepsTheKLargestRenormalised) {
  const auto p = sampling_distribution(kLogits, with(1.0, 3));
  // The 3 largest logits: ids 1 (2.0), 5 (1.9), 3 (1.5).
  const double z = std::exp(2.0) + std::exp(1.9) + std::exp(1.5);
  const std::map<size_t, double> want{{1, std::exp(2.0) / z}, {5, std::exp(1.9) / z}, {3, std::exp(1.5) / z}};
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_NEAR(p[i], want.count(i) ? want.at(i) : 0.0, 1e-6) << "token " << i;
  }
  const auto f = frequencies(kLogits, with(1.0, 3), 5000);
  for (size_t i = 0; i < f.size(); ++i) {
    if (!want.count(i)) EXPECT_EQ(f[i], 0.0) << "drew token " << i << " outside the top 3";
    else EXPECT_NEAR(f[i], want.at(i), 0.03);
  }
  // A tie at the cut keeps the lower id.
  const auto tie = sampling_distribution({1.0f, 2.0f, 2.0f, 0.0f}, with(1.0, 2));
  EXPECT_GT(tie[1], 0.0);
  EXPECT_GT(tie[2], 0.0);
  EXPECT_EQ(tie[0] + tie[3], 0.0);
  EXPECT_EQ(sampling_distribution({1.0f, 2.0f, 2.0f, 0.0f}, with(1.0, 1))[1], 1.0);
}

TEST(Sampling, TopPKeepsTheSmallestNucleus) {
  // Reference: sort by probability, keep tokens until the kept mass reaches p.
  for (double top_p : {0.3, 0.5, 0.8, 0.95}) {
    const auto soft = naive_softmax(kLogits, 1.0);
    std::vector<size_t> ids(soft.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = i;
    std::sort(ids.begin(), ids.end(), [&](size_t a, size_t b) { return soft[a] > soft[b]; });
    std::set<size_t> kept;
    double mass = 0.0;
    for (size_t i : ids) {
      kept.insert(i);
      mass += soft[i];
      if (mass >= top_p) break;
    }
    const auto p = sampling_distribution(kLogits, with(1.0, 0, top_p));
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_NEAR(p[i], kept.count(i) ? soft[i] / mass : 0.0, 1e-9) << "top_p " << top_p << " token " << i;
    }
  }
  // With top-k first, the nucleus is taken over the k survivors renormalised: of 2.0 and 1.9,
  // 2.0 alone holds 52.5% of their mass.
  const auto both = sampling_distribution(kLogits, with(1.0, 2, 0.5));
  EXPECT_EQ(both[1], 1.0);
  const auto f = frequencies(kLogits, with(1.0, 0, 0.5), 3000);
  EXPECT_EQ(f[0] + f[2] + f[4] + f[6] + f[7], 0.0);
}

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  const std::vector<float> l{2.0f, -1.0f, 0.5f, 3.0f, -0.5f};
  const auto got = apply_repetition_penalty(l, {0, 1, 0, 4, 1}, 2.0);
  EXPECT_EQ(got, (std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f, -1.0f}));
  // Greedy moves off a token it has already produced.
  Sampler s(with(0.0, 0, 1.0, 4.0));
  const Tensor t = tensor({1.0f, 3.0f, 2.0f}, {1, 3}, Device::cpu());
  EXPECT_EQ(s.sample(t, {{1}}), (std::vector<int64_t>{2}));
  EXPECT_EQ(s.sample(t, {{0}}), (std::vector<int64_t>{1}));
  EXPECT_NE(error_message([&] { s.sample(t, {{3}}); }).find("token 3 in the history is outside the vocabulary of 3"),
            std::string::npos);
}

TEST(Sampling, SeedsRepeatAndStreamsAreIndependentOfTheBatch) {
  Generator g(4);
  const Tensor logits = randn({3, 50}, DType::F32, Device::cpu(), &g);
  auto run = [&](uint64_t seed, const Tensor& l, std::vector<uint64_t> streams) {
    Sampler s(with(1.0, 0, 1.0, 1.0, seed), std::move(streams));
    std::vector<std::vector<int64_t>> out;
    for (int i = 0; i < 20; ++i) out.push_back(s.sample(l, {}));
    return out;
  };
  EXPECT_EQ(run(7, logits, {}), run(7, logits, {}));
  EXPECT_NE(run(7, logits, {}), run(8, logits, {}));
  // Row 2 of the batch draws the same tokens alone when it keeps its stream.
  const auto batch = run(7, logits, {});
  const auto alone = run(7, logits.narrow(0, 2, 1), {2});
  for (size_t i = 0; i < batch.size(); ++i) EXPECT_EQ(batch[i][2], alone[i][0]);
  // Steps at which a row does not draw do not move its stream.
  Sampler skipping(with(1.0, 0, 1.0, 1.0, 7));
  std::vector<int64_t> row0;
  for (int i = 0; i < 40; ++i) {
    const auto t = skipping.sample(logits, {}, {i % 2 == 0, true, false});
    EXPECT_EQ(t[2], -1);
    if (i % 2 == 0) row0.push_back(t[0]);
  }
  EXPECT_EQ(skipping.draws(0), 20u);
  EXPECT_EQ(skipping.draws(2), 0u);
  for (size_t i = 0; i < row0.size(); ++i) EXPECT_EQ(row0[i], batch[i][0]);
}

TEST(Sampling, LowTemperatureIsGreedy) {
  Generator g(5);
  const Tensor logits = randn({4, 100}, DType::F32, Device::cpu(), &g);
  Sampler greedy(with(0.0)), cold(with(1e-4, 0, 1.0, 1.0, 3));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(cold.sample(logits, {}), greedy.sample(logits, {}));
}

TEST(Sampling, NegativeInfinityTokensAreNeverDrawn) {
  const std::vector<float> l{-INFINITY, 0.0f, -INFINITY, 0.0f};
  const auto f = frequencies(l, with(1.0), 400);
  EXPECT_EQ(f[0] + f[2], 0.0);
  EXPECT_EQ(sampling_distribution(l, with(1.0, 3))[0], 0.0);
}

TEST(Sampling, RejectsBadInput) {
  EXPECT_NE(error_message([] { Sampler s(with(-1.0)); }).find("temperature must be >= 0"), std::string::npos);
  EXPECT_NE(error_message([] { Sampler s(with(1.0, -2)); }).find("top_k must be >= 0"), std::string::npos);
  EXPECT_NE(error_message([] { Sampler s(with(1.0, 0, 0.0)); }).find("top_p must be in (0, 1]"), std::string::npos);
  EXPECT_NE(error_message([] { Sampler s(with(1.0, 0, 1.0, 0.0)); }).find("repetition_penalty must be > 0"),
            std::string::npos);
  EXPECT_NE(error_message([] { sampling_distribution({NAN, 1.0f}, with(1.0)); }).find("NaN"), std::string::npos);
  EXPECT_NE(error_message([] { sampling_distribution({-INFINITY}, with(1.0)); }).find("no token has a finite logit"),
            std::string::npos);
  Sampler s(with(1.0));
  EXPECT_NE(error_message([&] { s.sample(zeros({2, 3}), {{}}); }).find("1 histories for a batch of 2"),
            std::string::npos);
  EXPECT_NE(error_message([&] { s.sample(zeros({3}), {}); }).find("expects logits (B, V)"), std::string::npos);
}

}  // namespace
}  // namespace longnet
