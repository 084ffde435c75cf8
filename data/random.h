#pragma once
// Stateless randomness for the data pipeline: every draw is a pure function of (seed, stream,
// index), so a dataset or loader positioned anywhere reproduces exactly what it would have drawn.
#include <cstdint>

namespace longnet::data {

/// Streams that keep the pipeline's different uses of one seed independent.
enum class RandomStream : uint32_t {
  kPermutation = 1,  // epoch order of examples
  kWindow = 2,       // start of a random LM window
  kPasskey = 3,      // passkey digits, depth and filler
  kSplit = 4,        // train/validation assignment
};

/// 64 random bits for (seed, stream, a, b).
uint64_t random_bits(uint64_t seed, RandomStream stream, uint64_t a, uint64_t b = 0);
/// Uniform integer in [0, n) for (seed, stream, a, b); n > 0. Unbiased (rejection on 64 bits).
uint64_t random_below(uint64_t n, uint64_t seed, RandomStream stream, uint64_t a, uint64_t b = 0);
/// Uniform double in [0, 1) (53 random bits).
double random_unit(uint64_t seed, RandomStream stream, uint64_t a, uint64_t b = 0);

/// A bijection of [0, n) chosen by (seed, round): a balanced Feistel network on the smallest
/// even-bit power of two >= n, cycle-walked back into range. O(1) memory for any n.
class Permutation {
 public:
  Permutation(uint64_t n, uint64_t seed, uint64_t round);
  /// The image of i (i < n).
  uint64_t operator()(uint64_t i) const;
  uint64_t size() const { return n_; }

 private:
  uint64_t n_;
  uint64_t seed_;
  uint64_t round_;
  int half_bits_;  // bits of each Feistel half
};

}  // namespace longnet::data
