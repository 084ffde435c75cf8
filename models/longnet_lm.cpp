#include "models/longnet_lm.h"

#include "framework/ops/copy.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/loss.h"

namespace longnet {

LossOutput language_model_loss(const Tensor& logits, const Tensor& targets, const Tensor& aux_loss, int64_t ignore_index) {
  const Tensor ce = cross_entropy(logits, targets, ignore_index);
  if (!aux_loss.defined()) return {ce, ce, Tensor()};
  return {add(ce, cast(aux_loss, ce.dtype())), ce, aux_loss};
}

LongNetLM::LongNetLM(const ModelConfig& config, bool initialize) : config_(config) {
  LN_CHECK(config.kind == "decoder", "[LongNetLM] needs a decoder config, got kind '", config.kind,
           "' (build a LongNetEncoderDecoder for encoder_decoder)");
  validate(config, default_device());
  Initializer init(config.seed, initialize);
  decoder_ = register_module("decoder", std::make_shared<LongNetDecoder>(config, init));
}

Tensor LongNetLM::forward(const Tensor& tokens, const Positions& positions, Tensor* aux_loss) const {
  LayerContext context;
  context.positions = positions;
  const StackOutput out = decoder_->run(decoder_->embed(tokens), context);
  if (aux_loss != nullptr) *aux_loss = out.aux_loss;
  return decoder_->project(out.hidden);
}

LossOutput LongNetLM::loss(const Tensor& tokens, const Tensor& targets, const Positions& positions) const {
  LN_CHECK(targets.defined() && targets.shape() == tokens.shape(), "[LongNetLM] targets ",
           targets.defined() ? shape_str(targets.shape()) : std::string("undefined"), " must match tokens ",
           shape_str(tokens.shape()));
  Tensor aux;
  const Tensor logits = forward(tokens, positions, &aux);
  return language_model_loss(logits, targets, aux, config_.ignore_index);
}

}  // namespace longnet
