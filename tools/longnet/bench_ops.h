#pragma once
// `longnet bench ops`: memory throughput of the framework's bandwidth-bound GPU ops (elementwise,
// LayerNorm, softmax, cross-entropy, AdamW) against a device-to-device copy.
#include <CLI/CLI.hpp>

namespace longnet::tools {

/// Adds the `ops` subcommand and its options under `bench`.
void register_bench_ops(CLI::App& bench);

}  // namespace longnet::tools
