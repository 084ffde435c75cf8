#pragma once
// `longnet bench model`: training-step throughput of a model preset. Forward and backward of the
// LM loss at given sequence lengths (default: the 125m preset at 8K and 32K tokens, batch 1, bf16
// activations on the GPU): tokens/s, model TFLOP/s (6 * parameters * tokens plus the attention
// FLOPs of the pairs each core computes), MFU against 989 TFLOP/s (H100 bf16 dense), and peak
// memory; with --decode, decoding tokens/s at each length (measured by `bench decode`'s code).
#include <CLI/CLI.hpp>

namespace longnet::tools {

/// Adds the `model` subcommand and its options under `bench`.
void register_bench_model(CLI::App& bench);

}  // namespace longnet::tools
