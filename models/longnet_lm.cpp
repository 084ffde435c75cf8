#include "models/longnet_lm.h"

#include "framework/ops/copy.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/loss.h"

namespace longnet {

namespace {

LossOutput with_aux_loss(const Tensor& ce, const Tensor& aux_loss) {
  if (!aux_loss.defined()) return {ce, ce, Tensor()};
  return {add(ce, cast(aux_loss, ce.dtype())), ce, aux_loss};
}

}  // namespace

LossOutput language_model_loss(const Tensor& logits, const Tensor& targets, const Tensor& aux_loss, int64_t ignore_index) {
  return with_aux_loss(cross_entropy(logits, targets, ignore_index), aux_loss);
}

LossOutput decoder_loss(const LongNetDecoder& decoder, const Tensor& hidden, const Tensor& targets,
                        const Tensor& aux_loss, int64_t ignore_index) {
  return with_aux_loss(linear_cross_entropy(hidden, decoder.project_weight(hidden), targets, ignore_index), aux_loss);
}

LongNetLM::LongNetLM(const ModelConfig& config, bool initialize) : config_(config) {
  LN_CHECK(config.kind == "decoder", "[LongNetLM] needs a decoder config, got kind '", config.kind,
           "' (build a LongNetEncoderDecoder for encoder_decoder)");
  validate(config, default_device());
  Initializer init(config.seed, initialize);
  decoder_ = register_module("decoder", std::make_shared<LongNetDecoder>(config, init));
}

Tensor LongNetLM::hidden(const Tensor& tokens, const Positions& positions, Tensor* aux_loss) const {
  LayerContext context;
  context.positions = positions;
  const StackOutput out = decoder_->run(decoder_->embed(tokens), context);
  if (aux_loss != nullptr) *aux_loss = out.aux_loss;
  return out.hidden;
}

Tensor LongNetLM::forward(const Tensor& tokens, const Positions& positions, Tensor* aux_loss) const {
  return decoder_->project(hidden(tokens, positions, aux_loss));
}

LossOutput LongNetLM::loss(const Tensor& tokens, const Tensor& targets, const Positions& positions) const {
  LN_CHECK(targets.defined() && targets.shape() == tokens.shape(), "[LongNetLM] targets ",
           targets.defined() ? shape_str(targets.shape()) : std::string("undefined"), " must match tokens ",
           shape_str(tokens.shape()));
  Tensor aux;
  const Tensor h = hidden(tokens, positions, &aux);
  return decoder_loss(*decoder_, h, targets, aux, config_.ignore_index);
}

}  // namespace longnet
