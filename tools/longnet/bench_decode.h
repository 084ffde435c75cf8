#pragma once
// `longnet bench decode`: generation speed of a model preset with each attention core, at given
// context lengths: time to the first token (prefill) and decoding tokens/s with the KV cache,
// measured end to end through generate() (greedy, chosen on the host as generate() does).
#include <cstdint>

#include <CLI/CLI.hpp>

#include "models/longnet_lm.h"

namespace longnet::tools {

/// What one decoding measurement found.
struct DecodeBenchResult {
  int64_t context = 0, batch = 0, steps = 0;
  /// Prefill of the context up to the first generated token.
  double prefill_seconds = 0.0;
  /// Median time between consecutive tokens of a sequence after the warm-up steps.
  double step_ms = 0.0;
  /// batch / step time: tokens generated per second over the batch.
  double tokens_per_second = 0.0;
  /// Keys and values cached at the final length, over all layers.
  int64_t cache_bytes = 0;
  /// Peak device memory of the framework's allocations during the run.
  int64_t peak_bytes = 0;
};

/// Generates warmup + steps tokens greedily after a prompt of `context` random tokens for each of
/// `batch` sequences (model on its device, in eval mode) and times them. The model's parameters
/// decide the device; the run synchronises with it after every token (the host chooses tokens).
DecodeBenchResult measure_decode(const LongNetLM& model, int64_t context, int64_t batch, int64_t steps,
                                 int64_t warmup = 4, int64_t prefill_chunk = 4096);

/// Adds the `decode` subcommand and its options under `bench`.
void register_bench_decode(CLI::App& bench);

}  // namespace longnet::tools
