#include "data/random.h"

#include "framework/core/error.h"
#include "framework/core/rng.h"

namespace longnet::data {

uint64_t random_bits(uint64_t seed, RandomStream stream, uint64_t a, uint64_t b) {
  uint32_t w[4];
  Philox4x32::generate(static_cast<uint32_t>(a), static_cast<uint32_t>(a >> 32),
                       static_cast<uint32_t>(b), static_cast<uint32_t>(b >> 32) ^
                                                     (static_cast<uint32_t>(stream) << 24),
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), w);
  return (uint64_t{w[0]} << 32) | w[1];
}

uint64_t random_below(uint64_t n, uint64_t seed, RandomStream stream, uint64_t a, uint64_t b) {
  LN_CHECK(n > 0, "[random_below] empty range");
  // Reject the top sliver of 2^64 that would bias the modulo; each retry uses a fresh counter.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  for (uint64_t attempt = 0;; ++attempt) {
    const uint64_t r = random_bits(seed, stream, a, b + (attempt << 48));
    if (r < limit) return r % n;
  }
}

double random_unit(uint64_t seed, RandomStream stream, uint64_t a, uint64_t b) {
  return static_cast<double>(random_bits(seed, stream, a, b) >> 11) * (1.0 / 9007199254740992.0);
}

Permutation::Permutation(uint64_t n, uint64_t seed, uint64_t round)
    : n_(n), seed_(seed), round_(round), half_bits_(1) {
  LN_CHECK(n > 0 && n <= (uint64_t{1} << 62), "[Permutation] domain size ", n, " outside [1, 2^62]");
  while ((uint64_t{1} << (2 * half_bits_)) < n) ++half_bits_;
}

uint64_t Permutation::operator()(uint64_t i) const {
  LN_CHECK(i < n_, "[Permutation] index ", i, " outside [0, ", n_, ")");
  const uint64_t mask = (uint64_t{1} << half_bits_) - 1;
  uint64_t x = i;
  // The domain is at most 4x larger than n, so a few walks on average land back inside [0, n).
  do {
    uint64_t left = x >> half_bits_, right = x & mask;
    for (uint64_t r = 0; r < 4; ++r) {
      const uint64_t f = random_bits(seed_, RandomStream::kPermutation, round_, (r << 40) ^ right);
      const uint64_t next = left ^ (f & mask);
      left = right;
      right = next;
    }
    x = (left << half_bits_) | right;
  } while (x >= n_);
  return x;
}

}  // namespace longnet::data
