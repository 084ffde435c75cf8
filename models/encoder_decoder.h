#pragma once
// The LongNet encoder-decoder for document-to-text tasks: an encoder with dilated (configurable)
// self-attention over the document, a decoder with causal self-attention and dense
// cross-attention to the encoder output; key padding masks on both sides.
#include <memory>

#include "models/config.h"
#include "models/longnet_lm.h"
#include "models/stack.h"

namespace longnet {

/// (B, N) bool, true where tokens equal pad_id.
Tensor padding_mask_of(const Tensor& tokens, int64_t pad_id);

/// The encoder output (B, M, dim) with its padding mask and the encoder's auxiliary loss.
struct EncoderOutput {
  Tensor memory;
  Tensor padding_mask;
  Tensor aux_loss;
};

/// Encoder-decoder LongNet. One token embedding, owned by the encoder (encoder.embed_tokens.weight),
/// is shared by the decoder and, when tied, the LM head. Initialisation as LongNetLM, with the
/// encoder-decoder MAGNETO gains (encoder sqrt(log(3 M) log(2 N) / 3), decoder sqrt(log(3 M)), N
/// encoder and M decoder layers).
class LongNetEncoderDecoder : public Module {
 public:
  explicit LongNetEncoderDecoder(const ModelConfig& config, bool initialize = true);
  std::string type_name() const override { return "LongNetEncoderDecoder"; }

  /// source (B, M) tokens and their padding mask (B, M) bool, or undefined -> the encoder output.
  EncoderOutput encode(const Tensor& source, const Tensor& source_padding_mask = Tensor()) const;
  /// target (B, N) tokens at `positions` (offset, ... for an offset) attending to `encoded` -> logits (B, N, vocab).
  /// `target_padding_mask` (B, N) marks padded target keys (or undefined; with causal attention
  /// padding at the end changes nothing before it). The decoder's auxiliary loss, if any, is added
  /// to `aux_loss` when given.
  Tensor decode(const Tensor& target, const EncoderOutput& encoded, const Tensor& target_padding_mask = Tensor(),
                const Positions& positions = 0, Tensor* aux_loss = nullptr) const;
  /// encode then decode.
  Tensor forward(const Tensor& source, const Tensor& target, const Tensor& source_padding_mask = Tensor(),
                 const Tensor& target_padding_mask = Tensor()) const;
  /// Cross-entropy of the decoder's predictions for `target_in` against `target_out` (B, N), plus
  /// the cores' auxiliary losses.
  LossOutput loss(const Tensor& source, const Tensor& target_in, const Tensor& target_out,
                  const Tensor& source_padding_mask = Tensor(), const Tensor& target_padding_mask = Tensor()) const;

  LongNetEncoder& encoder() const { return *encoder_; }
  LongNetDecoder& decoder() const { return *decoder_; }
  const ModelConfig& config() const { return config_; }
  void set_checkpoint(bool on);

 private:
  ModelConfig config_;
  std::shared_ptr<LongNetEncoder> encoder_;
  std::shared_ptr<LongNetDecoder> decoder_;
};

}  // namespace longnet
