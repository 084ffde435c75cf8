#pragma once
// A training checkpoint, `step-N/` in the run directory (written atomically by
// io::CheckpointWriter):
//   model.safetensors       the model's parameters and buffers (HF-style names, {"format": "pt"})
//   model_config.json       the models' config the weights belong to
//   optimizer.safetensors   the optimizer's tensors ("<param>.<state>"); optimizer.json its scalars
//   trainer_state.json      step, the random stream (seed, offset), the loader's position, the
//                           skipped-step counters, tokens seen, the tokenizer's hash
//   config.toml             the run config
//   tokenizer.model         the tokenizer (when the run names one)
//   manifest.json           sizes and CRC-32s, written last (see framework/io/checkpoint_dir.h)
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/core/rng.h"
#include "layers/module.h"
#include "models/config.h"
#include "optim/optimizer.h"
#include "tools/longnet/config.h"

namespace longnet::tools {

/// The trainer's own progress, saved with each checkpoint.
struct TrainerState {
  int64_t step = 0;              // updates done (skipped ones included)
  RngState rng;                  // the default random stream (dropout) after `step`
  nlohmann::json loader;         // data::LoaderState::to_json() of the training loader
  int64_t skipped_steps = 0;     // non-finite steps skipped so far
  int64_t consecutive_bad = 0;   // non-finite steps in a row at `step`
  int64_t tokens_seen = 0;       // training tokens consumed
  std::string tokenizer_hash;    // SHA-256 of the tokenizer, "" when none

  nlohmann::json to_json() const;
  /// Throws naming a missing or mistyped key.
  static TrainerState from_json(const nlohmann::json& j);
};

/// Everything a checkpoint holds, by reference.
struct CheckpointContents {
  const Module& model;
  const longnet::ModelConfig& model_config;
  /// Over every trained parameter (with ZeRO-1, gathered from the ranks first).
  const optim::OptimizerState& optimizer;
  const TrainerState& state;
  const RunConfig& config;
  std::string tokenizer_path;  // copied in when non-empty
};

/// Called after each file of a checkpoint is written, before the checkpoint is committed (tests
/// use it to kill a process mid-save).
using CheckpointFileHook = std::function<void(int64_t step, const std::string& file)>;

/// Writes `step-<state.step>/` into `run_dir` atomically and returns its path.
std::filesystem::path save_training_checkpoint(const std::filesystem::path& run_dir, const CheckpointContents& c,
                                               const CheckpointFileHook& hook = {});

/// Restores model weights, optimizer state and returns the trainer state of checkpoint `dir`
/// (the random stream and loader are the caller's to restore from it). The model and optimizer
/// must have the checkpoint's parameter names and shapes; a mismatch is an error naming them.
/// `sharded` (ZeRO-1): the optimizer holds some of the parameters and takes their state only.
TrainerState load_training_checkpoint(const std::filesystem::path& dir, Module& model, optim::Optimizer& optimizer,
                                      Device device, bool sharded = false);

/// The part of `state` that belongs to the parameters named in `names` (tensors
/// "<name>.<state>" and update counts).
optim::OptimizerState optimizer_state_subset(const optim::OptimizerState& state, const std::vector<std::string>& names);

}  // namespace longnet::tools
