#pragma once
// `longnet bench cpu`: GEMM and LayerNorm throughput of the CPU engine.

namespace longnet::tools {

/// Options of the CPU benchmark.
struct CpuBenchOptions {
  int threads = 0;     // OpenMP threads (and OpenBLAS's for the direct baseline); 0: all cores
  int reps = 10;       // timed repetitions per case (after warm-up)
  bool quick = false;  // small shapes, for a smoke run in CI
};

/// Prints the markdown tables; returns the exit code.
int run_cpu_bench(const CpuBenchOptions& opt);

}  // namespace longnet::tools
