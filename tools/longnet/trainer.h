#pragma once
// The training loop behind `longnet train` and `longnet finetune`.
//
// One run directory (checkpoint.dir) holds everything: config.toml, step-N/ checkpoints,
// metrics.jsonl, tensorboard/, report.html. A run started on a directory that has a valid
// checkpoint resumes from the newest one: weights, optimizer state, step, random stream and
// loader position are restored, so the losses that follow equal those of an uninterrupted run
// (exactly, on the CPU). Otherwise the model is initialised from training.seed, or, for
// fine-tuning, loaded from training.finetune_from. The task (data.task) picks the examples and the
// loss: language modelling, passkey retrieval (loss on the answer only) or document-to-text with
// the encoder-decoder.
//
// Each update accumulates training.grad_accum micro-batches, clips the global gradient norm and
// steps the optimizer at the schedule's rate. A non-finite loss or gradient norm skips the update
// (counted); more than training.max_bad_steps in a row stop the run with an error. SIGINT and
// SIGTERM (when handled) finish the current update, save a checkpoint and return.
//
// Distributed (TrainOptions::world): every rank calls train() with the same config. The ranks form
// a parallelism.data_parallel x parallelism.sequence_parallel mesh (trainer_dist.h);
// training.batch_size stays the global batch of a micro-step, split over the data-parallel
// replicas, and each sequence is split over the sequence-parallel ranks with the attention core
// of parallelism.sequence_algorithm. Gradients are averaged over all ranks in buckets during
// backward; with parallelism.zero1 each rank keeps the optimizer state of its share of the
// parameters. The ranks agree on the loss, non-finite steps, gradient norms, evaluations and on
// stopping after a signal; only world rank 0 prints and writes files, and its checkpoints are those
// of a single process, so a run resumes at any world size.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "framework/dist/communicator.h"
#include "tools/longnet/config.h"
#include "tools/longnet/trainer_state.h"

namespace longnet::tools {

/// How a run talks to its surroundings.
struct TrainOptions {
  /// The live console line and messages go here (nullptr: nothing is printed).
  std::FILE* console = stdout;
  /// Forces the console mode (in place on a terminal or one line per update); default: isatty.
  std::optional<bool> console_tty;
  /// Print the effective config at the start.
  bool print_config = true;
  /// Install SIGINT/SIGTERM handlers for the run (restored after).
  bool handle_signals = true;
  /// Called after each checkpoint file is written (tests).
  CheckpointFileHook on_checkpoint_file;
  /// Called after each update with (step, loss) (tests use it to raise a signal mid-run).
  std::function<void(int64_t step, double loss)> on_step;
  /// This rank's world of a distributed run; null (or a world of one) trains as a single process.
  /// NCCL worlds train on GPUs, in-process worlds (tests: one train() call per rank thread) on the
  /// CPU.
  dist::Communicator* world = nullptr;
  /// This process's index among the ranks of its node: the GPU it trains on.
  int local_rank = 0;
};

/// What a run did.
struct TrainResult {
  std::filesystem::path run_dir;
  int64_t start_step = 0;  // the step resumed from (0 for a fresh run)
  int64_t end_step = 0;    // the step reached
  bool interrupted = false;  // stopped by a signal before training.steps
  /// (step, mean loss of its micro-batches) for each update this call made; skipped updates have a
  /// non-finite loss.
  std::vector<std::pair<int64_t, double>> losses;
  int64_t skipped_steps = 0;  // over the whole run, resumes included
  std::optional<double> valid_loss;  // the last evaluation's
  std::filesystem::path last_checkpoint;
};

/// Trains as `config` says (see the top of this file); throws longnet::Error on bad configs,
/// missing data and too many non-finite steps.
TrainResult train(const RunConfig& config, const TrainOptions& options = {});

/// The signal (SIGINT, SIGTERM) that asked the running train() to stop, or 0.
int stop_signal();

}  // namespace longnet::tools
