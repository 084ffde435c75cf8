#include "framework/cpu/random.h"

#include <cmath>

#include "framework/core/rng.h"
#include "framework/cpu/loops.h"

namespace longnet::cpu {
float philox_uniform(uint64_t seed, uint64_t offset, int64_t i) {
  uint32_t w[4];
  philox_words(seed, offset + static_cast<uint64_t>(i / 4), w);
  return Philox4x32::uniform(w[i % 4]);
}

void uniform(const RandomParams& p) {
  parallel_for((p.n + 3) / 4, [&](int64_t c) {
    uint32_t w[4];
    philox_words(p.seed, p.offset + static_cast<uint64_t>(c), w);
    for (int k = 0; k < 4 && c * 4 + k < p.n; ++k) p.out[c * 4 + k] = Philox4x32::uniform(w[k]);
  });
}

void normal(const RandomParams& p) {
  constexpr float kTwoPi = 6.283185307179586f;
  parallel_for((p.n + 3) / 4, [&](int64_t c) {
    uint32_t w[4];
    philox_words(p.seed, p.offset + static_cast<uint64_t>(c), w);
    float z[4];
    for (int k = 0; k < 4; k += 2) {
      // u1 in (0, 1] keeps the log finite.
      const float u1 = (static_cast<float>(w[k] >> 8) + 1.0f) * (1.0f / 16777216.0f);
      const float u2 = Philox4x32::uniform(w[k + 1]);
      const float r = std::sqrt(-2.0f * std::log(u1));
      z[k] = r * std::cos(kTwoPi * u2);
      z[k + 1] = r * std::sin(kTwoPi * u2);
    }
    for (int k = 0; k < 4 && c * 4 + k < p.n; ++k) p.out[c * 4 + k] = z[k];
  });
}

}  // namespace longnet::cpu
