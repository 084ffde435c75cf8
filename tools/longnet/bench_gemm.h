#pragma once
// `longnet bench gemm`: bf16 GEMM throughput of the CUDA backend at LongNet shapes.
#include <CLI/CLI.hpp>

namespace longnet::tools {

/// Adds the `gemm` subcommand and its options under `bench`.
void register_bench_gemm(CLI::App& bench);

}  // namespace longnet::tools
