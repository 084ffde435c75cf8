#pragma once
// `longnet bench attention`: the attention cores. Mode --show-pattern draws which (query, key)
// pairs a core attends to as an SVG.
#include <CLI/CLI.hpp>

namespace longnet::tools {

/// Adds the `attention` subcommand and its options under `bench`.
void register_bench_attention(CLI::App& bench);

}  // namespace longnet::tools
