#pragma once
// Counter-based randomness (Philox-4x32-10): a value depends only on (seed, counter), so CPU and
// GPU kernels draw the same numbers for the same element, and the state is two integers.
#include <cstdint>

namespace longnet {

/// Four 32-bit random words for one 128-bit counter under a 64-bit key.
struct Philox4x32 {
  static constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  static constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;

  /// Random words for counter (c0, c1, c2, c3) and key (k0, k1), ten rounds.
#if defined(__CUDACC__)
  __host__ __device__
#endif
  static inline void generate(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                              uint32_t k1, uint32_t out[4]) {
    for (int r = 0; r < 10; ++r) {
      const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0;
      const uint64_t p1 = static_cast<uint64_t>(kMul1) * c2;
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
      c1 = static_cast<uint32_t>(p1);
      c3 = static_cast<uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
  }

  /// A float uniform in [0, 1) from one word (24 random bits).
#if defined(__CUDACC__)
  __host__ __device__
#endif
  static inline float uniform(uint32_t word) {
    return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
  }
};

/// The four words of Philox counter `counter` under `seed`, laid out as every draw of the
/// framework lays them out: element i of a draw starting at `offset` uses word i % 4 of counter
/// offset + i / 4. CPU and CUDA kernels both call this, so they draw the same values.
#if defined(__CUDACC__)
__host__ __device__
#endif
inline void philox_words(uint64_t seed, uint64_t counter, uint32_t out[4]) {
  Philox4x32::generate(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32), 0, 0,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), out);
}

/// The state of a random stream: a seed and how many 128-bit counters have been used.
struct RngState {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

/// A random stream. Each draw of n values reserves ceil(n / 4) counters, so element i of a draw
/// uses counter (offset + i / 4), word i % 4, wherever it is computed.
class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : state_{seed, 0} {}
  /// Reserves counters for `n` values and returns the offset of the first.
  uint64_t reserve(int64_t n) {
    const uint64_t first = state_.offset;
    state_.offset += static_cast<uint64_t>((n + 3) / 4);
    return first;
  }
  RngState state() const { return state_; }
  void set_state(RngState s) { state_ = s; }
  /// Restarts the stream from a seed.
  void manual_seed(uint64_t seed) { state_ = {seed, 0}; }

 private:
  RngState state_;
};

/// The calling thread's default stream, used when an op is given no generator (each thread has
/// its own, starting from seed 0).
Generator& default_generator();
/// Seeds the calling thread's default stream.
void manual_seed(uint64_t seed);

}  // namespace longnet
