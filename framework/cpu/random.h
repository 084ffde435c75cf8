#pragma once
// CPU kernels drawing from the Philox stream (the same values the GPU kernels draw).
#include <cstdint>

namespace longnet::cpu {

/// Parameters of a random fill of n contiguous float values.
struct RandomParams {
  float* out = nullptr;
  int64_t n = 0;
  uint64_t seed = 0;
  uint64_t offset = 0;  // first Philox counter of this draw
};

/// out[i] uniform in [0, 1).
void uniform(const RandomParams& p);
/// out[i] standard normal.
void normal(const RandomParams& p);

/// The i-th uniform of a draw starting at counter `offset` (used by dropout masks too).
float philox_uniform(uint64_t seed, uint64_t offset, int64_t i);

}  // namespace longnet::cpu
