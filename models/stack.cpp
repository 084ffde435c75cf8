#include "models/stack.h"

#include <algorithm>
#include <cmath>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/copy.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/matmul.h"

namespace longnet {
namespace {

// The projections MAGNETO scales at initialisation, by their module name.
bool magneto_scaled(const std::string& name) {
  for (const char* m : {".fc1.weight", ".fc2.weight", ".gate.weight", ".v_proj.weight", ".out_proj.weight"}) {
    const std::string suffix(m);
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) return true;
  }
  return false;
}

Tensor add_loss(const Tensor& total, const Tensor& term) {
  if (!term.defined()) return total;
  return total.defined() ? add(total, term) : term;
}

// Whether layer i recomputes its forward in backward: the first checkpoint_layers of them (all
// when 0) under checkpoint_activations.
bool checkpoints_layer(const ModelConfig& c, int64_t i) {
  return c.checkpoint_activations && (c.checkpoint_layers == 0 || i < c.checkpoint_layers);
}

}  // namespace

TransformerLayerConfig layer_config(const ModelConfig& c, bool encoder) {
  TransformerLayerConfig l;
  l.dim = c.dim;
  l.heads = c.heads;
  l.ffn_dim = c.ffn_dim;
  l.ffn_kind = c.ffn_kind;
  l.norm_placement = c.norm;
  l.norm = c.norm_kind;
  l.norm_eps = c.norm_eps;
  l.bias = c.bias;
  l.dropout = c.dropout;
  l.activation_dropout = c.activation_dropout;
  l.ffn_checkpoint = c.ffn_checkpoint;
  l.ffn_checkpoint_chunk = c.ffn_checkpoint_chunk;
  l.self_attention = encoder ? c.encoder_attention : c.attention;
  l.self_attention_config = encoder ? c.encoder_attention_config : c.attention_config;
  l.cross_attention = !encoder && c.kind == "encoder_decoder";
  l.cross_attention_core = c.cross_attention;
  l.cross_attention_config = c.cross_attention_config;
  return l;
}

int64_t xpos_center_period(const std::string& core, const AttentionConfig& a) {
  if (core != "dilated" && core != "dilated_parallel" && core != "head_parallel") return 0;
  const std::vector<int64_t>& w = a.segment_lengths;
  if (w.empty()) return 0;
  const int64_t largest = *std::max_element(w.begin(), w.end());
  for (const int64_t x : w) {
    if (x <= 0 || largest % x != 0) return 0;
  }
  return largest;
}

std::shared_ptr<RotaryEmbedding> make_positions(const ModelConfig& c, bool encoder) {
  if (c.positions == "none") return nullptr;
  RotaryConfig r;
  r.kind = c.positions;
  r.head_dim = c.head_dim();
  r.base = c.rope_base;
  r.scale_base = c.xpos_scale_base;
  r.center = c.max_positions / 2;
  r.center_period = encoder ? xpos_center_period(c.encoder_attention, c.encoder_attention_config)
                            : xpos_center_period(c.attention, c.attention_config);
  return std::make_shared<RotaryEmbedding>(r);
}

TransformerStack::TransformerStack(const ModelConfig& config, Initializer& init, bool encoder, double gain,
                                   std::shared_ptr<Embedding> shared_embedding)
    : config_(config), embed_scale_(config.scale_embedding ? std::sqrt(static_cast<double>(config.dim)) : 1.0) {
  const ModelConfig& c = config_;
  if (shared_embedding) {
    embed_tokens_ = std::move(shared_embedding);
  } else {
    embed_tokens_ = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.dim, init));
  }
  dropout_ = register_module("dropout", std::make_shared<Dropout>(c.dropout));
  const TransformerLayerConfig lc = layer_config(c, encoder);
  const std::shared_ptr<const RotaryEmbedding> positions = make_positions(c, encoder);
  layers_ = register_module("layers", std::make_shared<ModuleList<TransformerLayer>>());
  for (int64_t i = 0; i < (encoder ? c.encoder_layers : c.layers); ++i) {
    TransformerLayerConfig li = lc;
    li.checkpoint = checkpoints_layer(c, i);
    if (encoder) {
      layers_->push_back(std::make_shared<EncoderLayer>(li, init, positions));
    } else {
      layers_->push_back(std::make_shared<DecoderLayer>(li, init, positions));
    }
  }
  layer_norm_ = register_module("layer_norm", make_norm(c.norm_kind, c.dim, init, c.norm_eps));
  if (gain != 1.0 && init.fills()) {
    NoGradGuard no_grad;
    for (const auto& [name, p] : layers_->named_parameters()) {
      if (magneto_scaled("." + name)) mul_(p, gain);
    }
  }
}

Tensor TransformerStack::embed(const Tensor& tokens) const {
  LN_CHECK(tokens.defined() && tokens.dim() == 2, "[", type_name(), "] expects tokens (B, N), got ",
           tokens.defined() ? shape_str(tokens.shape()) : std::string("undefined"));
  Tensor x = embed_tokens_->forward(tokens);
  if (embed_scale_ != 1.0) x = mul(x, embed_scale_);
  return dropout_->forward(cast(x, config_.compute_dtype));
}

StackOutput TransformerStack::run(const Tensor& x, const LayerContext& context) const {
  Tensor h = x, aux;
  for (const auto& layer : *layers_) {
    const LayerOutput o = layer->forward(h, context);
    h = o.x;
    aux = add_loss(aux, o.aux_loss);
  }
  return {layer_norm_->forward(h), aux};
}

void TransformerStack::set_checkpoint(bool on) {
  config_.checkpoint_activations = on;
  for (size_t i = 0; i < layers_->size(); ++i) {
    (*layers_)[i].set_checkpoint(checkpoints_layer(config_, static_cast<int64_t>(i)));
  }
}

LongNetEncoder::LongNetEncoder(const ModelConfig& config, Initializer& init)
    : TransformerStack(config, init, true, magneto_gains(config).encoder, nullptr) {}

LongNetDecoder::LongNetDecoder(const ModelConfig& config, Initializer& init, std::shared_ptr<Embedding> shared_embedding)
    : TransformerStack(config, init, false, magneto_gains(config).decoder, std::move(shared_embedding)) {
  if (!config.tie_weights) {
    const double std = 1.0 / std::sqrt(static_cast<double>(config.dim));
    output_projection_ = register_module(
        "output_projection", std::make_shared<Linear>(init.normal({config.vocab_size, config.dim}, std), Tensor()));
  }
}

Tensor LongNetDecoder::project(const Tensor& hidden) const {
  if (output_projection_) return output_projection_->forward(hidden);
  return linear(hidden, project_weight(hidden));
}

Tensor LongNetDecoder::project_weight(const Tensor& hidden) const {
  return in_dtype_of(output_projection_ ? output_projection_->weight() : embed_tokens().weight(), hidden);
}

}  // namespace longnet
