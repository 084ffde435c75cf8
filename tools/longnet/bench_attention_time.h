#pragma once
// `longnet bench attention --time`: GPU timing of the attention cores in bf16 against PyTorch in the
// same run. Dense causal attention (our attention() op) forward and backward in TFLOP/s next to
// PyTorch's SDPA (its default backend and cuDNN); the dilated core with the paper's schedule,
// forward+backward time, effective TFLOP/s (computed FLOPs only) and peak memory, next to the
// project's PyTorch reference, bench/pytorch/longnet_reference.py.
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

namespace longnet::tools {

/// Options of the timing mode.
struct AttentionTimeOptions {
  bool time = false;       // the mode is chosen
  bool quick = false;      // small sizes (smoke test)
  bool long_seqs = false;  // dilated also at N = 128K, 256K, 512K and 1M
  int reps = 10;           // timed runs per case (median)
  bool no_torch = false;   // skip the PyTorch runs
  std::string python = "python3";
  std::string script = "bench/pytorch/longnet_reference.py";
};

/// Adds --time and its options to the `bench attention` subcommand; the options are filled on parse.
std::shared_ptr<AttentionTimeOptions> add_attention_time_options(CLI::App* sub);

/// Runs the timing mode; prints markdown tables. Fails clearly without a GPU or a CUDA build.
int run_attention_time(const AttentionTimeOptions& options);

}  // namespace longnet::tools
