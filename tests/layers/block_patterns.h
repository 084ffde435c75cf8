#pragma once
// The block-sparse patterns the layer tests use: every kind with small, fixed parameters.
#include <string>

#include "layers/attention/core.h"

namespace longnet::testing {

/// A pattern of `kind` with window `window` blocks, dilation 2, one global block, two random
/// blocks (seed 5) and two hierarchy levels of factor 2.
inline BlockPattern test_pattern(const std::string& kind, int64_t window = 1) {
  BlockPattern p;
  p.kind = kind;
  p.window = window;
  p.dilation = 2;
  p.global_blocks = 1;
  p.random_blocks = 2;
  p.seed = 5;
  p.levels = 2;
  p.level_factor = 2;
  return p;
}

}  // namespace longnet::testing
