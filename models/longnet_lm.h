#pragma once
// The LongNet decoder-only language model (Ding et al. 2023): MAGNETO sub-LN decoder layers with
// XPOS positions and dilated self-attention by default, any core and size by config.
#include <memory>

#include "models/config.h"
#include "models/stack.h"

namespace longnet {

/// The loss of a batch: cross-entropy + auxiliary losses of the attention cores (the adaptive
/// core's sparsity regulariser), each term also on its own (aux_loss undefined when none).
struct LossOutput {
  Tensor loss;
  Tensor cross_entropy;
  Tensor aux_loss;
};

/// Mean cross-entropy of logits (..., V) against targets (...), ignoring `ignore_index`, plus
/// `aux_loss` when defined.
LossOutput language_model_loss(const Tensor& logits, const Tensor& targets, const Tensor& aux_loss, int64_t ignore_index);
/// The same for the final hidden states (..., dim) of `decoder` (after its final norm): its head
/// and the cross-entropy computed together in row chunks (linear_cross_entropy), so that the
/// logits (..., vocab) never exist whole, in the forward or the backward.
LossOutput decoder_loss(const LongNetDecoder& decoder, const Tensor& hidden, const Tensor& targets,
                        const Tensor& aux_loss, int64_t ignore_index);

/// Decoder-only LongNet LM. Parameters: decoder.embed_tokens.weight, decoder.layers.N...,
/// decoder.layer_norm.*, decoder.output_projection.weight (untied only).
///
/// Initialisation (sub-LN, MAGNETO): Xavier-uniform projections (q, k, v with gain 1/sqrt(2)), then
/// fc1, fc2, v_proj and out_proj weights multiplied by gamma = sqrt(log(2 L)) for L layers (the
/// decoder-only gain of the MAGNETO paper); embeddings N(0, 1/dim), scaled by sqrt(dim) on input.
class LongNetLM : public Module {
 public:
  /// Builds the model on the default device; `initialize` false leaves the parameters
  /// uninitialised (to be loaded from a checkpoint). Validates the config for that device.
  explicit LongNetLM(const ModelConfig& config, bool initialize = true);
  std::string type_name() const override { return "LongNetLM"; }

  /// tokens (B, N) i64 at `positions` (offset, offset + 1, ... for an offset) -> logits (B, N, vocab) in the
  /// compute dtype. The attention cores' auxiliary loss, if any, is in `aux_loss` when given.
  Tensor forward(const Tensor& tokens, const Positions& positions = 0, Tensor* aux_loss = nullptr) const;
  /// The training objective for tokens (B, N) and next-token targets (B, N), through decoder_loss
  /// (equal to language_model_loss of forward()'s logits, without holding them).
  LossOutput loss(const Tensor& tokens, const Tensor& targets, const Positions& positions = 0) const;

  LongNetDecoder& decoder() const { return *decoder_; }
  const ModelConfig& config() const { return config_; }
  /// Turns activation checkpointing of every layer on or off.
  void set_checkpoint(bool on) { decoder_->set_checkpoint(on); }

 private:
  // The final hidden states (B, N, dim), before the head.
  Tensor hidden(const Tensor& tokens, const Positions& positions, Tensor* aux_loss) const;

  ModelConfig config_;
  std::shared_ptr<LongNetDecoder> decoder_;
};

}  // namespace longnet
