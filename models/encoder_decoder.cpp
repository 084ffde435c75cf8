#include "models/encoder_decoder.h"

#include "framework/ops/elementwise.h"

namespace longnet {

Tensor padding_mask_of(const Tensor& tokens, int64_t pad_id) {
  return compare(tokens, static_cast<double>(pad_id), CompareOp::Eq);
}

LongNetEncoderDecoder::LongNetEncoderDecoder(const ModelConfig& config, bool initialize) : config_(config) {
  LN_CHECK(config.kind == "encoder_decoder", "[LongNetEncoderDecoder] needs an encoder_decoder config, got kind '",
           config.kind, "'");
  validate(config, default_device());
  Initializer init(config.seed, initialize);
  encoder_ = register_module("encoder", std::make_shared<LongNetEncoder>(config, init));
  decoder_ = register_module("decoder", std::make_shared<LongNetDecoder>(config, init, encoder_->embed_tokens_ptr()));
}

EncoderOutput LongNetEncoderDecoder::encode(const Tensor& source, const Tensor& source_padding_mask) const {
  LayerContext context;
  context.padding_mask = source_padding_mask;
  const StackOutput out = encoder_->run(encoder_->embed(source), context);
  return {out.hidden, source_padding_mask, out.aux_loss};
}

Tensor LongNetEncoderDecoder::decode(const Tensor& target, const EncoderOutput& encoded, const Tensor& target_padding_mask,
                                     const Positions& positions, Tensor* aux_loss) const {
  LN_CHECK(encoded.memory.defined() && encoded.memory.dim() == 3 && encoded.memory.size(0) == target.size(0),
           "[LongNetEncoderDecoder] the encoder output ",
           encoded.memory.defined() ? shape_str(encoded.memory.shape()) : std::string("undefined"),
           " does not match the target batch ", shape_str(target.shape()));
  LayerContext context;
  context.padding_mask = target_padding_mask;
  context.memory = encoded.memory;
  context.memory_padding_mask = encoded.padding_mask;
  context.positions = positions;
  const StackOutput out = decoder_->run(decoder_->embed(target), context);
  if (aux_loss != nullptr) *aux_loss = out.aux_loss;
  return decoder_->project(out.hidden);
}

Tensor LongNetEncoderDecoder::forward(const Tensor& source, const Tensor& target, const Tensor& source_padding_mask,
                                      const Tensor& target_padding_mask) const {
  return decode(target, encode(source, source_padding_mask), target_padding_mask);
}

LossOutput LongNetEncoderDecoder::loss(const Tensor& source, const Tensor& target_in, const Tensor& target_out,
                                       const Tensor& source_padding_mask, const Tensor& target_padding_mask) const {
  LN_CHECK(target_out.defined() && target_out.shape() == target_in.shape(), "[LongNetEncoderDecoder] targets ",
           target_out.defined() ? shape_str(target_out.shape()) : std::string("undefined"), " must match the decoder input ",
           shape_str(target_in.shape()));
  const EncoderOutput encoded = encode(source, source_padding_mask);
  Tensor aux;
  const Tensor logits = decode(target_in, encoded, target_padding_mask, 0, &aux);
  if (encoded.aux_loss.defined()) aux = aux.defined() ? add(aux, encoded.aux_loss) : encoded.aux_loss;
  return language_model_loss(logits, target_out, aux, config_.ignore_index);
}

void LongNetEncoderDecoder::set_checkpoint(bool on) {
  encoder_->set_checkpoint(on);
  decoder_->set_checkpoint(on);
}

}  // namespace longnet
