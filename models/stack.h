#pragma once
// The transformer stacks of the LongNet models, built from a ModelConfig: token embedding (scaled by
// sqrt(dim)), layers sharing one rotary position encoding, and a final norm; the decoder adds the
// LM head. Parameter names follow torchscale: embed_tokens, layers.N.self_attn.q_proj.weight, ...,
// layer_norm, output_projection.
#include <memory>

#include "layers/embedding.h"
#include "layers/linear.h"
#include "layers/transformer.h"
#include "models/config.h"

namespace longnet {

/// The layer options of a stack (encoder: bidirectional self-attention with the encoder's core;
/// decoder: the decoder's core, and cross-attention in an encoder-decoder). Checkpointing is left
/// off: the stack sets it per layer (config.checkpoint_layers).
TransformerLayerConfig layer_config(const ModelConfig& config, bool encoder);

/// The XPOS centre period for a self-attention core: the largest dilated segment when every
/// segment length divides it (dilated attention then never pairs positions of different blocks of
/// that length, so each block can have its own centre and long sequences stay finite); 0 (one
/// centre) for the other cores.
int64_t xpos_center_period(const std::string& core, const AttentionConfig& attention);

/// The rotary encoding a config asks for (null for positions = none), for the encoder's stack or
/// the decoder's.
std::shared_ptr<RotaryEmbedding> make_positions(const ModelConfig& config, bool encoder);

/// Hidden states of a stack and the sum of its attention cores' auxiliary losses (or undefined).
struct StackOutput {
  Tensor hidden;
  Tensor aux_loss;
};

/// Embedding, layers, final norm. Encoder and decoder stacks differ in their layers only.
class TransformerStack : public Module {
 public:
  /// tokens (B, N) i32/i64 -> (B, N, dim) in the compute dtype: the scaled embedding, dropped out.
  Tensor embed(const Tensor& tokens) const;
  /// The layers and final norm over embedded input x (B, N, dim); the context carries masks, the
  /// encoder output and the position offset.
  StackOutput run(const Tensor& x, const LayerContext& context) const;

  const ModuleList<TransformerLayer>& layers() const { return *layers_; }
  /// The norm after the last layer (run() applies it).
  const Norm& layer_norm() const { return *layer_norm_; }
  const Embedding& embed_tokens() const { return *embed_tokens_; }
  const std::shared_ptr<Embedding>& embed_tokens_ptr() const { return embed_tokens_; }
  const ModelConfig& config() const { return config_; }
  /// Turns activation checkpointing of every layer on or off.
  void set_checkpoint(bool on);

 protected:
  /// `shared_embedding` null: the stack owns its embedding (registered as embed_tokens); else it
  /// uses that one without registering it. Layers' fc1, fc2, gate, v_proj and out_proj weights are
  /// scaled by `gain` (MAGNETO) when init fills tensors.
  TransformerStack(const ModelConfig& config, Initializer& init, bool encoder, double gain,
                   std::shared_ptr<Embedding> shared_embedding);

 private:
  ModelConfig config_;
  std::shared_ptr<Embedding> embed_tokens_;
  std::shared_ptr<Dropout> dropout_;
  std::shared_ptr<ModuleList<TransformerLayer>> layers_;
  std::shared_ptr<Norm> layer_norm_;
  double embed_scale_;
};

/// The encoder stack (bidirectional).
class LongNetEncoder final : public TransformerStack {
 public:
  LongNetEncoder(const ModelConfig& config, Initializer& init);
  std::string type_name() const override { return "LongNetEncoder"; }
};

/// The decoder stack (causal) with the LM head: logits = layer_norm(h) W^T, W the embedding when
/// weights are tied, else output_projection (initialised N(0, dim^-1)).
class LongNetDecoder final : public TransformerStack {
 public:
  LongNetDecoder(const ModelConfig& config, Initializer& init, std::shared_ptr<Embedding> shared_embedding = nullptr);
  std::string type_name() const override { return "LongNetDecoder"; }
  /// Final hidden states (B, N, dim), after the final norm -> logits (B, N, vocab) in their dtype.
  Tensor project(const Tensor& hidden) const;
  /// The head's weight (vocab, dim) in the dtype of `hidden`, as project() multiplies by it (the
  /// tied embedding or output_projection's): for ops that apply the head themselves.
  Tensor project_weight(const Tensor& hidden) const;

 private:
  std::shared_ptr<Linear> output_projection_;
};

}  // namespace longnet
