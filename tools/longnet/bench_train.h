#pragma once
// `longnet bench train`: our training step (LM loss forward, backward, AdamW update) against the
// PyTorch reference of the same model, bench/pytorch/longnet_model.py, at the same config and
// sequence lengths (batch 1): tokens/s, MFU, peak memory and the ratios, as a markdown table; with
// --longest, the longest sequence a step fits for each (under --memory-limit, to emulate a smaller
// GPU on a bigger one).
#include <cstdint>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace longnet::tools {

/// Options of `bench train`.
struct TrainBenchOptions {
  std::string preset = "125m";
  std::vector<int64_t> seq_lens{8192, 32768, 131072};
  std::string device = "cuda";
  std::string dtype = "bf16";
  /// Activation checkpointing on both sides: on, off, or auto (on above kCheckpointAbove tokens).
  std::string checkpoint = "auto";
  /// Ours only, where checkpointing is on: how many layers recompute (the first ones); 0: all.
  /// PyTorch's reference checkpoints every layer.
  int64_t checkpoint_layers = 0;
  /// Ours: what the feed-forward sublayers keep (model.ffn_checkpoint): activation, none,
  /// chunked, or auto (chunked above kFfnChunkAbove tokens, activation otherwise).
  std::string ffn_checkpoint = "auto";
  int steps = 5;   // timed steps (median)
  int warmup = 2;  // untimed steps before them
  bool no_torch = false;
  bool no_compile = false;  // the reference without torch.compile
  std::string python = "python3";
  std::string script = "bench/pytorch/longnet_model.py";
  /// Longest-sequence search instead of the timing table.
  bool longest = false;
  int64_t longest_start = 131072;
  int64_t longest_max = int64_t{1} << 22;
  int64_t longest_unit = 32768;
  bool bisect = false;
  /// GB (2^30 bytes) a step may peak at, both sides (0: the device's memory).
  double memory_limit_gb = 0.0;
  /// After the table, where our step's time goes at each length: exclusive time per op and
  /// backward node over the timed steps (framework/core/profiler.h).
  bool profile = false;
};

/// With checkpoint "auto", activation checkpointing is on for sequences longer than this.
inline constexpr int64_t kCheckpointAbove = 32768;

/// With ffn_checkpoint "auto", the feed-forward sublayers recompute in chunks above this many
/// tokens: where a layer's feed-forward activations no longer fit beside the rest.
inline constexpr int64_t kFfnChunkAbove = 262144;

/// Whether a step at n tokens checkpoints activations under `mode` (on, off, auto); throws for
/// another mode.
bool train_bench_checkpointing(const std::string& mode, int64_t n);

/// model.ffn_checkpoint for a step at n tokens under `mode` (auto, activation, none, chunked);
/// throws for another mode.
std::string train_bench_ffn_checkpoint(const std::string& mode, int64_t n);

/// Runs the benchmark; prints markdown. Fails clearly (returns 1) when asked for CUDA without a
/// GPU or a CUDA build.
int run_bench_train(const TrainBenchOptions& options);

/// Adds the `train` subcommand and its options under `bench`.
void register_bench_train(CLI::App& bench);

}  // namespace longnet::tools
