#pragma once
// `longnet bench dist`: distributed performance on one node, N GPUs (one process each, NCCL)
// against one. Sections:
//   comm     all_reduce bus bandwidth and send/recv bandwidth between rank pairs, against the link;
//   dp       data-parallel scaling of a training step (AdamW, gradients averaged during backward)
//            on 1, 2, 4, ... and N GPUs;
//   sp       sequence-parallel scaling of a training step on one long sequence (dilated_parallel,
//            ring) on 2, 4, ... and N GPUs, against one GPU running the single-process core;
//   longest  the longest sequence whose training step fits on one GPU and on N.
// Launch under `mpirun -np N longnet bench dist` (or any launcher setting RANK/WORLD_SIZE), or
// `longnet bench dist --nproc-per-node N`, which re-runs the program once per GPU. Rank 0 prints
// markdown tables; the others print nothing.
//
// The sections take the world communicator and the rank's device, so that they also run on the
// in-process backend (CPU ranks as threads), which is how they are tested.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "framework/core/device.h"
#include "framework/dist/communicator.h"

namespace longnet::tools {

/// Everything `bench dist` measures and how. Section defaults apply where a field says so.
struct DistBenchOptions {
  /// Sections to run, in this order: comm, dp, sp, longest.
  std::vector<std::string> sections{"comm", "dp", "sp", "longest"};
  std::string preset = "125m";
  /// Activation dtype on GPUs (parameters and optimizer state stay f32).
  std::string dtype = "bf16";
  /// Activation checkpointing per layer: on, off, or auto (off for dp, on for sp and longest,
  /// whose single-GPU runs would not fit without it).
  std::string checkpoint = "auto";
  /// Untimed steps before the timed ones (-1: the section's default: dp 3, sp 1, longest 1).
  int warmup = -1;
  /// Timed steps (0: the section's default: dp 10, sp 3, longest 1).
  int reps = 0;

  // comm
  int64_t comm_min_bytes = int64_t{1} << 20;
  int64_t comm_max_bytes = int64_t{1} << 30;
  /// all_reduce dtypes (send/recv moves bytes, its dtype does not matter: bf16).
  std::vector<std::string> comm_dtypes{"bf16", "f32"};
  /// Timed runs per size (each of several back-to-back operations); their median is reported.
  int comm_runs = 5;

  // dp
  /// Tokens per rank (batch 1).
  int64_t dp_seq = 8192;

  // sp
  /// The whole sequence (or, with per_gpu, each GPU's share of it).
  int64_t sp_seq = 262144;
  /// Weak scaling: N GPUs train on N x sp_seq tokens against one GPU on sp_seq.
  bool per_gpu = false;
  /// Sequence-parallel cores, each against its single-process core (dilated_parallel and
  /// head_parallel: dilated; ring and head_parallel_dense: dense).
  std::vector<std::string> sp_cores{"dilated_parallel", "ring"};
  /// Placement of ring's chunks: zigzag (balanced causal work) or contiguous.
  std::string ring_placement = "zigzag";

  // longest
  int64_t longest_start = 32768;
  /// First length of the N-GPU search (0: longest_start): N times the one-GPU result, say, to
  /// confirm a target without doubling up to it.
  int64_t longest_start_n = 0;
  /// Bisection step after the doubling (0: doubling only).
  int64_t longest_granularity = 16384;
  /// The search's upper bound.
  int64_t longest_max = int64_t{1} << 23;
  /// A step whose peak exceeds this many bytes does not fit either (0: only out-of-memory errors
  /// count), e.g. to find what would fit on a smaller GPU.
  int64_t memory_limit_bytes = 0;

  /// Rank 0 writes progress lines here while long sections run (null: none).
  std::FILE* log = nullptr;
};

/// One training step's time and memory, the slowest rank's.
struct StepStats {
  double ms = 0;
  double peak_mib = 0;
};

/// Facts shared by the tables of the model sections.
struct ModelBenchInfo {
  std::string preset;
  int64_t parameters = 0;
  std::string dtype;
  bool checkpoint = false;
  std::string schedule;  // "w = {...}, r = {...}"
  int warmup = 0, reps = 0;
};

// ---- comm

/// One measured operation of the comm section.
struct CommRow {
  std::string op;      // all_reduce | send_recv
  std::string detail;  // the dtype (all_reduce) or the direction, e.g. "0->1", "0<->1"
  int64_t bytes = 0;
  double us = 0;           // per operation, slowest rank
  double gb_per_s = 0;     // all_reduce: algbw = bytes / time; send_recv: per direction
  double bus_gb_per_s = 0; // all_reduce: algbw x 2 (n - 1) / n; send_recv: as gb_per_s
};

/// The nominal figures of the link between the GPUs of a node.
struct LinkNominal {
  std::string name;  // empty: unknown
  double bidirectional_gb_per_s = 0;
  double per_direction_gb_per_s = 0;
  bool known() const { return !name.empty(); }
};

/// What the comm section measured.
struct CommResult {
  int ranks = 0;
  std::string device;
  std::string backend;
  LinkNominal link;
  int runs = 0;
  std::vector<CommRow> rows;
};

// ---- dp and sp

/// One configuration of a scaling table.
struct ScalingRow {
  std::string core;
  int gpus = 1;
  int64_t sequence = 0;  // tokens of one sequence (dp: per rank; sp: in all)
  int64_t per_gpu = 0;   // tokens each GPU holds
  StepStats step;
  double tokens_per_s = 0;
  double tflops_per_gpu = 0;  // model FLOPs per second per GPU
  double efficiency = 1;      // against the row's one-GPU baseline (1 for the baseline itself)
};

/// A scaling section's rows: each one-GPU baseline followed by the N-GPU rows it is compared with.
struct ScalingResult {
  std::string section;  // dp | sp
  int ranks = 0;
  std::string device;
  ModelBenchInfo model;
  int64_t sequence = 0;
  bool per_gpu = false;
  std::string ring_placement;
  std::vector<ScalingRow> rows;
};

// ---- longest

/// The longest sequence search on a number of GPUs.
struct LongestRow {
  int gpus = 1;
  std::string core;
  int64_t unit = 0;      // lengths tried are multiples of this
  int64_t longest = 0;   // 0: not even the first length fits
  int64_t per_gpu = 0;
  StepStats step;        // at `longest`
  double tokens_per_s = 0;
  int64_t first_failure = 0;  // the shortest length that did not fit (0: the search hit its bound)
  std::string failure;        // why it did not fit
  int tries = 0;
};

/// What the longest section found.
struct LongestResult {
  int ranks = 0;
  std::string device;
  ModelBenchInfo model;
  int64_t memory_limit_bytes = 0;
  int64_t max = 0;
  /// First lengths tried on one GPU and on N.
  int64_t start = 0, start_n = 0;
  std::vector<LongestRow> rows;
};

// ---- sections: every rank of `world` calls them together; the results are the same on all ranks

CommResult bench_dist_comm(dist::Communicator& world, Device device, const DistBenchOptions& o);
ScalingResult bench_dist_dp(dist::Communicator& world, Device device, const DistBenchOptions& o);
ScalingResult bench_dist_sp(dist::Communicator& world, Device device, const DistBenchOptions& o);
LongestResult bench_dist_longest(dist::Communicator& world, Device device, const DistBenchOptions& o);

/// Markdown tables of the sections.
std::string format_comm(const CommResult& r);
std::string format_scaling(const ScalingResult& r);
std::string format_longest(const LongestResult& r);

/// Runs the selected sections in order; when `out` is non-null (rank 0), writes each section's
/// table there as soon as it is measured. Throws on an unknown section name.
void run_dist_bench(dist::Communicator& world, Device device, const DistBenchOptions& o, std::FILE* out);

// ---- pieces with their own tests

/// The link of a node of `device_name` GPUs (NVLink 4 for H100 SXM and H200), or unknown.
LinkNominal nominal_link(const std::string& device_name);

/// True when `e` reports an allocation failure (the framework's allocators, CUDA, cuBLAS, cuDNN).
bool is_out_of_memory(const std::exception& e);

/// Whether a training step fits, and why not.
enum class Fit : int { Fits = 0, OverLimit = 1, OutOfMemory = 2 };

/// The outcome of attempt_steps on one rank.
struct Attempt {
  Fit fit = Fit::Fits;
  std::vector<double> ms;  // each timed step (empty unless it fits)
  int64_t peak_bytes = 0;  // over the timed steps
};

/// Runs prepare(), `warmup` untimed steps and `reps` timed ones (wall-clock, each ending with a
/// device synchronisation), catching out-of-memory errors (other errors propagate). A step whose
/// peak exceeds `limit_bytes` (when > 0) does not fit. Afterwards the memory the attempt freed is
/// returned to the device (CUDA's pool trimmed), so that the next attempt starts clean.
Attempt attempt_steps(Device device, int64_t limit_bytes, int warmup, int reps, const std::function<void()>& prepare,
                      const std::function<void()>& step);

/// What find_longest found.
struct LongestSearch {
  int64_t longest = 0;        // 0: the first length did not fit
  int64_t first_failure = 0;  // 0: every length up to the bound fitted
  int tries = 0;
};

/// The longest multiple of `unit` in [start, max] (start rounded up to a multiple of unit) for
/// which fits() holds, assuming that fitting is monotone: doubling from start until a failure or
/// the bound, then, with `bisect`, halving the gap to a failure down to one unit.
LongestSearch find_longest(int64_t start, int64_t unit, int64_t max, bool bisect,
                           const std::function<bool(int64_t)>& fits);

/// Adds the `dist` subcommand and its options under `bench`.
void register_bench_dist(CLI::App& bench);

}  // namespace longnet::tools
