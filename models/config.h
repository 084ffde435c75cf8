#pragma once
// Model configurations: every size and option of the LongNet models, named presets from a test
// model to the paper's 2.7B, validation with clear errors, an analytic parameter count, and JSON
// (de)serialisation for checkpoints.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/core/device.h"
#include "framework/core/dtype.h"
#include "layers/attention/core.h"

namespace longnet {

/// Everything that determines a model's structure and initialisation.
struct ModelConfig {
  /// Preset name, or "custom".
  std::string name = "custom";
  /// decoder (LongNet LM) | encoder_decoder
  std::string kind = "decoder";
  int64_t vocab_size = 32000;
  int64_t dim = 512;
  /// Decoder layers.
  int64_t layers = 6;
  /// Encoder layers (encoder_decoder only).
  int64_t encoder_layers = 0;
  int64_t heads = 8;
  int64_t ffn_dim = 2048;
  /// gelu | swiglu
  std::string ffn_kind = "gelu";
  /// sub_ln (MAGNETO) | pre_ln
  std::string norm = "sub_ln";
  /// layer_norm | rms_norm
  std::string norm_kind = "layer_norm";
  double norm_eps = 1e-5;
  /// Relative positions on self-attention: xpos | rope | none.
  std::string positions = "xpos";
  double rope_base = 10000.0;
  double xpos_scale_base = 512.0;
  /// The training length: XPOS keeps its scale factors centred there (0: centre at position 0).
  int64_t max_positions = 32768;
  /// The LM head reuses the token embedding.
  bool tie_weights = true;
  /// Biases in projections.
  bool bias = true;
  /// Embedding output multiplied by sqrt(dim), as torchscale and the papers do.
  bool scale_embedding = true;
  /// Residual-branch dropout, and dropout of the FFN hidden units.
  double dropout = 0.0;
  double activation_dropout = 0.0;
  /// Decoder self-attention core (registry name) and its parameters.
  std::string attention = "dilated";
  AttentionConfig attention_config;
  /// Encoder self-attention (encoder_decoder).
  std::string encoder_attention = "dilated";
  AttentionConfig encoder_attention_config;
  /// Decoder cross-attention to the encoder output (encoder_decoder).
  std::string cross_attention = "dense";
  AttentionConfig cross_attention_config;
  /// Recompute each layer's activations in backward.
  bool checkpoint_activations = false;
  /// With checkpoint_activations: how many layers recompute (the first ones; the others keep
  /// their activations, trading memory for the recomputation's time); 0: all of them.
  int64_t checkpoint_layers = 0;
  /// What each layer's feed-forward sublayer keeps for the backward (TransformerLayerConfig):
  /// activation (default), none, or chunked (its input alone; recomputed ffn_checkpoint_chunk
  /// tokens at a time, which is what lets the longest sequences fit).
  std::string ffn_checkpoint = "activation";
  int64_t ffn_checkpoint_chunk = 65536;
  /// Target id that the loss ignores.
  int64_t ignore_index = -100;
  /// Seed of the initial weights.
  uint64_t seed = 0;
  /// Dtype of activations (parameters stay f32): f32 on the CPU (16-bit types are computed in f32
  /// there), bf16 or f16 on a GPU.
  DType compute_dtype = DType::F32;

  int64_t head_dim() const { return heads > 0 ? dim / heads : 0; }
};

/// The preset of that name: tiny (tests), tiny_encoder_decoder (tests), small (quickstart, CPU),
/// 125m, 350m, 760m, 1.3b, 2.7b (the LongNet scaling sizes, GPT-3 shapes, MAGNETO + XPOS, the
/// paper's segment lengths and dilation rates). Throws naming the known presets.
ModelConfig model_preset(const std::string& name);
/// Every preset name, smallest first.
std::vector<std::string> model_preset_names();

/// Throws a longnet::Error listing every problem of the config (sizes, kinds, core names, the
/// dilated schedule, ...). On a CUDA `device`, the head dim and compute dtype must also be ones the
/// GPU attention kernels take (head dim 32, 64 or 128; bf16 or f16); on the CPU any work.
void validate(const ModelConfig& config, Device device = Device::cpu());

/// Parameter count of the model `config` describes, from the formula (not from a built module).
int64_t analytic_parameter_count(const ModelConfig& config);

/// The config as JSON (every field) and back; unknown keys and bad values are errors naming them.
nlohmann::json to_json(const ModelConfig& config);
ModelConfig model_config_from_json(const nlohmann::json& json);

/// The MAGNETO initialisation gains (Wang et al. 2022, "Foundation Transformers", Table 1) by which
/// the sub-LN models scale the initial fc1, fc2 (and SwiGLU gate), v_proj and out_proj weights, with
/// N encoder and M decoder layers:
///   decoder-only:    gamma = sqrt(log(2 M));
///   encoder-decoder: encoder gamma = sqrt(log(3 M) * log(2 N) / 3), decoder gamma = sqrt(log(3 M)).
struct MagnetoGains {
  double encoder = 1.0;
  double decoder = 1.0;
};
MagnetoGains magneto_gains(const ModelConfig& config);

}  // namespace longnet
