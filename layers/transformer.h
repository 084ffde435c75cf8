#pragma once
// Transformer layers, written once for encoder and decoder: self-attention (any core), optional
// cross-attention, feed-forward, each as a residual branch with its norm.
//
// Norm placement:
//   pre_ln: x + drop(attn(norm(x))), then x + drop(ffn(norm(x)));
//   sub_ln (MAGNETO, Wang et al. 2022, "Foundation Transformers"): pre_ln plus a second norm inside
//          each branch, before the attention's output projection and before the FFN's second
//          projection; the model scales some initial weights by a gain (see the models).
// Optionally the layer's forward is checkpointed (activations recomputed in backward).
#include <functional>
#include <memory>
#include <string>

#include "layers/dropout.h"
#include "layers/feed_forward.h"
#include "layers/multihead_attention.h"
#include "layers/norm.h"

namespace longnet {

/// Everything a transformer layer is built from.
struct TransformerLayerConfig {
  int64_t dim = 0;
  int64_t heads = 0;
  int64_t ffn_dim = 0;
  /// gelu | swiglu
  std::string ffn_kind = "gelu";
  /// sub_ln | pre_ln
  std::string norm_placement = "sub_ln";
  /// layer_norm | rms_norm
  std::string norm = "layer_norm";
  double norm_eps = 0.0;  // <= 0: the norm's default
  bool bias = true;
  /// Dropout of each branch's output (before the residual add) and of the FFN's hidden units.
  double dropout = 0.0;
  double activation_dropout = 0.0;
  /// Self-attention core (registry name) and its parameters.
  std::string self_attention = "dense";
  AttentionConfig self_attention_config;
  /// Cross-attention to an encoder's output (decoder layers of an encoder-decoder).
  bool cross_attention = false;
  std::string cross_attention_core = "dense";
  AttentionConfig cross_attention_config;
  /// Width of the encoder output (0: dim).
  int64_t memory_dim = 0;
  /// Recompute the layer's activations in backward instead of keeping them.
  bool checkpoint = false;
  /// What the feed-forward sublayer (its norm, the block, its dropout) keeps for the backward:
  /// activation: all but the gelu sub-LN block's activation output, which it recomputes or, fused
  /// with the sub-LN, never writes (see FeedForwardConfig::recompute_activation); none:
  /// everything; chunked: its input alone, the rest recomputed in backward ffn_checkpoint_chunk
  /// tokens at a time (checkpoint_rows), which bounds the sublayer's activations by a chunk's,
  /// whatever the sequence length.
  std::string ffn_checkpoint = "activation";
  int64_t ffn_checkpoint_chunk = 65536;
  /// With parameters in another dtype than the activations (f32 master weights, bf16 compute),
  /// convert them all at the start of the layer in one batched cast (ParamCastScope) rather than
  /// each where it is used: the same values and gradients in two launches instead of one per
  /// parameter and direction.
  bool batch_param_casts = true;
};

/// Inputs of a layer besides x.
struct LayerContext {
  /// (B, N) bool, true at padded positions of x (keys of self-attention); or undefined.
  Tensor padding_mask;
  /// Encoder output (B, M, memory_dim) for cross-attention; or undefined.
  Tensor memory;
  /// (B, M) bool, true at padded encoder positions; or undefined.
  Tensor memory_padding_mask;
  /// Positions of x's rows (an offset, or runs).
  Positions positions;
  /// Replaces the self-attention core for this call (see AttentionCall::attend): the hook a
  /// KV-cache decoder runs the layer through.
  AttendFn self_attend;
};

/// A layer's output (B, N, dim) and the sum of its attention cores' auxiliary losses (or undefined).
struct LayerOutput {
  Tensor x;
  Tensor aux_loss;
};

/// One transformer layer; EncoderLayer and DecoderLayer fix its causality. Submodules (torchscale's
/// names): self_attn, self_attn_layer_norm, encoder_attn, encoder_attn_layer_norm, ffn,
/// final_layer_norm.
class TransformerLayer : public Module {
 public:
  /// `positions` rotates q and k of self-attention (shared between layers); null for none.
  TransformerLayer(const TransformerLayerConfig& config, bool causal, Initializer& init,
                   std::shared_ptr<const RotaryEmbedding> positions);

  /// x (B, N, dim) -> (B, N, dim).
  LayerOutput forward(const Tensor& x, const LayerContext& context = {}) const;

  /// What the layer's attention sublayers compute on their normed input (B, n, dim): `self`
  /// always, `cross` in layers with cross-attention. A defined `residual` (B, n, dim) is added to
  /// the output in its projection's product (the layer's skip, folded in when no dropout stands
  /// between).
  struct SublayerCalls {
    using Call = std::function<AttentionLayerOutput(const Tensor& normed, const Tensor& residual)>;
    Call self, cross;
  };
  /// The layer's residual structure (norms, residual adds, feed-forward) around `calls`, with the
  /// dropout of the residual branches when `dropout`: forward() passes its attention modules;
  /// cached decoding passes attention over its caches, so both run the same layer.
  LayerOutput compose(const Tensor& x, const SublayerCalls& calls, bool dropout) const;

  const TransformerLayerConfig& config() const { return config_; }
  bool causal() const { return causal_; }
  void set_checkpoint(bool on) { config_.checkpoint = on; }
  MultiheadAttention& self_attn() const { return *self_attn_; }
  /// Null without cross-attention.
  MultiheadAttention* encoder_attn() const { return encoder_attn_.get(); }
  const FeedForward& ffn() const { return *ffn_; }

 private:
  LayerOutput run(const Tensor& x, const Tensor& memory, const LayerContext& context) const;
  /// The parameters the sublayers take in the activations' dtype (in_dtype_of): all but the
  /// attention cores', which convert their own.
  std::vector<Tensor> activation_dtype_parameters() const;

  TransformerLayerConfig config_;
  bool causal_;
  std::shared_ptr<MultiheadAttention> self_attn_, encoder_attn_;
  std::shared_ptr<Norm> self_attn_layer_norm_, encoder_attn_layer_norm_, final_layer_norm_;
  std::shared_ptr<FeedForward> ffn_;
  std::shared_ptr<Dropout> dropout_;
};

/// Bidirectional self-attention and feed-forward.
class EncoderLayer final : public TransformerLayer {
 public:
  EncoderLayer(const TransformerLayerConfig& config, Initializer& init,
               std::shared_ptr<const RotaryEmbedding> positions = nullptr);
  std::string type_name() const override { return "EncoderLayer"; }
};

/// Causal self-attention, cross-attention when configured, and feed-forward.
class DecoderLayer final : public TransformerLayer {
 public:
  DecoderLayer(const TransformerLayerConfig& config, Initializer& init,
               std::shared_ptr<const RotaryEmbedding> positions = nullptr);
  std::string type_name() const override { return "DecoderLayer"; }
};

}  // namespace longnet
