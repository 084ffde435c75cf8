#pragma once
// Whether this test process can run GPU tests, and the skip used by every GPU test.
#include <string>

#include <gtest/gtest.h>

namespace longnet::testing {

/// True when the build has the CUDA backend and a device is present.
bool gpu_available();
/// Why GPU tests cannot run here (empty when they can).
std::string gpu_unavailable_reason();

}  // namespace longnet::testing

/// Skips the current test with a visible message when no GPU can run it.
#define LN_REQUIRE_GPU()                                                                      \
  do {                                                                                        \
    if (!::longnet::testing::gpu_available())                                                 \
      GTEST_SKIP() << "GPU tests skipped (no CUDA device): "                                  \
                   << ::longnet::testing::gpu_unavailable_reason();                          \
  } while (0)
