// Test entry point: says up front whether the GPU tests will run, so a CPU-only run is visible.
#include <gtest/gtest.h>

#include <iostream>

#include "tests/support/gpu.h"

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  if (!longnet::testing::gpu_available()) {
    std::cout << "[longnet] GPU tests skipped (no CUDA device): "
              << longnet::testing::gpu_unavailable_reason() << "\n";
  }
  return RUN_ALL_TESTS();
}
