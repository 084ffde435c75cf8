#pragma once
// What every training and inference command builds from a run config or a checkpoint: the device,
// the models' config, and a trained model loaded back with its run config and tokenizer.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "data/tokenizer.h"
#include "models/config.h"
#include "models/longnet_lm.h"
#include "tools/longnet/config.h"

namespace longnet::tools {

/// True when this build has the CUDA backend and a GPU is visible.
bool gpu_available();
/// GPUs visible to this process (0 without the CUDA backend).
int gpu_count();
/// The device `training.device` names: "auto" is GPU `local_rank` (one GPU per process of a
/// node) when gpu_available(), else the CPU; "cuda" is GPU `local_rank`, and without a usable GPU
/// an error saying so (training.device, or a --device option).
Device resolve_device(const std::string& name, int local_rank = 0);
/// "f32" or "bf16" as a DType (bf16 computes in f32 on the CPU, per the models).
DType compute_dtype_from_name(const std::string& name);

/// The models' config of a run: [model] and [attention] keys, the seed of training.seed, the
/// compute dtype of training.dtype. Validated for `device`.
longnet::ModelConfig model_config_from_run(const RunConfig& config, Device device);

/// Makes the embeddings and the lowest `layers` layers (encoder first, then decoder) untrainable;
/// returns how many parameter tensors were frozen. 0 freezes nothing.
int64_t freeze_lowest_layers(Module& model, int64_t layers);

/// A checkpoint's files (see trainer_state.h for the full list).
inline constexpr const char* kModelFile = "model.safetensors";
inline constexpr const char* kModelConfigFile = "model_config.json";
inline constexpr const char* kRunConfigFile = "config.toml";
inline constexpr const char* kTokenizerFile = "tokenizer.model";

/// The checkpoint `path` names: a `step-N/` directory as is (it must verify), or a run directory's
/// newest valid checkpoint. Throws saying what was looked for.
std::filesystem::path resolve_checkpoint(const std::filesystem::path& path);

/// A trained decoder-only LM read back from a checkpoint.
struct LoadedModel {
  std::filesystem::path checkpoint;  // the step-N/ directory
  int64_t step = 0;
  RunConfig run_config;               // the config the checkpoint was trained with
  longnet::ModelConfig model_config;  // as built (compute dtype as requested)
  std::shared_ptr<LongNetLM> model;   // in eval mode
  std::optional<data::Tokenizer> tokenizer;  // the checkpoint's copy, when it has one
};

/// Loads a checkpoint (see resolve_checkpoint) onto `device`, computing in `dtype` ("" keeps the
/// run's training.dtype). Only decoder-only models; an encoder-decoder is an error naming it.
LoadedModel load_model(const std::filesystem::path& path, Device device, const std::string& dtype = "");

}  // namespace longnet::tools
