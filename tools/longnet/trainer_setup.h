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
#include "models/encoder_decoder.h"
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

/// A trained model read back from a checkpoint: a decoder-only LM or an encoder-decoder (exactly
/// one of `model` and `encoder_decoder` is set, as model_config.kind says).
struct LoadedModel {
  std::filesystem::path checkpoint;  // the step-N/ directory
  int64_t step = 0;
  RunConfig run_config;               // the config the checkpoint was trained with
  longnet::ModelConfig model_config;  // as built (compute dtype as requested)
  std::shared_ptr<LongNetLM> model;   // in eval mode; null for an encoder-decoder
  std::shared_ptr<LongNetEncoderDecoder> encoder_decoder;  // in eval mode; null for an LM
  std::optional<data::Tokenizer> tokenizer;  // the checkpoint's copy, when it has one

  /// "decoder" or "encoder_decoder" (model_config.kind).
  const std::string& kind() const { return model_config.kind; }
  bool is_encoder_decoder() const { return encoder_decoder != nullptr; }
  /// Whichever model was loaded.
  Module& module() const;
  /// The LM; for an encoder-decoder an error naming `command` (e.g. "eval --passkey") and the kind.
  LongNetLM& lm(const std::string& command) const;
  /// The encoder-decoder; for an LM an error naming `command` and the kind.
  LongNetEncoderDecoder& seq2seq(const std::string& command) const;
};

/// Loads a checkpoint (see resolve_checkpoint) onto `device`, computing in `dtype` ("" keeps the
/// run's training.dtype): a decoder-only LM or an encoder-decoder, as its model config says.
LoadedModel load_model(const std::filesystem::path& path, Device device, const std::string& dtype = "");

}  // namespace longnet::tools
