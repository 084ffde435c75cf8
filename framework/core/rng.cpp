#include "framework/core/rng.h"

namespace longnet {

Generator& default_generator() {
  // One per thread: ranks run as threads by the in-process backend must not share a stream.
  thread_local Generator g(0);
  return g;
}

void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

}  // namespace longnet
