#include "layers/transformer.h"

#include <algorithm>
#include <optional>
#include <unordered_set>

#include "framework/autograd/checkpoint.h"
#include "framework/ops/elementwise.h"

namespace longnet {
namespace {

// Adds an auxiliary loss to a running sum (either may be undefined).
Tensor add_loss(const Tensor& total, const Tensor& term) {
  if (!term.defined()) return total;
  return total.defined() ? add(total, term) : term;
}

}  // namespace

TransformerLayer::TransformerLayer(const TransformerLayerConfig& config, bool causal, Initializer& init,
                                   std::shared_ptr<const RotaryEmbedding> positions)
    : config_(config), causal_(causal) {
  const TransformerLayerConfig& c = config_;
  LN_CHECK(c.norm_placement == "sub_ln" || c.norm_placement == "pre_ln", "[TransformerLayer] unknown norm placement '",
           c.norm_placement, "'; known: sub_ln, pre_ln");
  LN_CHECK(!c.cross_attention || causal, "[TransformerLayer] cross-attention belongs to decoder layers");
  LN_CHECK(c.ffn_checkpoint == "activation" || c.ffn_checkpoint == "none" || c.ffn_checkpoint == "chunked",
           "[TransformerLayer] unknown ffn_checkpoint '", c.ffn_checkpoint, "'; known: activation, none, chunked");
  LN_CHECK(c.ffn_checkpoint_chunk > 0, "[TransformerLayer] ffn_checkpoint_chunk must be positive, got ",
           c.ffn_checkpoint_chunk);
  const bool sub_ln = c.norm_placement == "sub_ln";
  MultiheadAttentionConfig attn;
  attn.dim = c.dim;
  attn.heads = c.heads;
  attn.bias = c.bias;
  attn.sub_ln = sub_ln;
  attn.norm = c.norm;
  attn.norm_eps = c.norm_eps;
  attn.core = c.self_attention;
  attn.attention = c.self_attention_config;
  self_attn_ = register_module("self_attn", std::make_shared<MultiheadAttention>(attn, init, std::move(positions)));
  self_attn_layer_norm_ = register_module("self_attn_layer_norm", make_norm(c.norm, c.dim, init, c.norm_eps));
  if (c.cross_attention) {
    MultiheadAttentionConfig cross = attn;
    cross.kv_dim = c.memory_dim;
    cross.core = c.cross_attention_core;
    cross.attention = c.cross_attention_config;
    encoder_attn_ = register_module("encoder_attn", std::make_shared<MultiheadAttention>(cross, init));
    encoder_attn_layer_norm_ = register_module("encoder_attn_layer_norm", make_norm(c.norm, c.dim, init, c.norm_eps));
  }
  FeedForwardConfig ffn;
  ffn.dim = c.dim;
  ffn.hidden = c.ffn_dim;
  ffn.kind = c.ffn_kind;
  ffn.sub_ln = sub_ln;
  ffn.norm = c.norm;
  ffn.norm_eps = c.norm_eps;
  ffn.activation_dropout = c.activation_dropout;
  ffn.bias = c.bias;
  // Inside a chunk the activations are small, and recomputing them twice would be waste.
  ffn.recompute_activation = c.ffn_checkpoint == "activation";
  ffn_ = register_module("ffn", std::make_shared<FeedForward>(ffn, init));
  final_layer_norm_ = register_module("final_layer_norm", make_norm(c.norm, c.dim, init, c.norm_eps));
  dropout_ = register_module("dropout", std::make_shared<Dropout>(c.dropout));
}

std::vector<Tensor> TransformerLayer::activation_dtype_parameters() const {
  std::unordered_set<const TensorImpl*> own_dtype;
  for (const MultiheadAttention* attn : {self_attn_.get(), encoder_attn_.get()}) {
    if (attn == nullptr) continue;
    for (const Tensor& p : attn->core().parameters()) own_dtype.insert(p.impl());
  }
  std::vector<Tensor> params = parameters();
  if (!own_dtype.empty()) std::erase_if(params, [&](const Tensor& p) { return own_dtype.count(p.impl()) > 0; });
  return params;
}

LayerOutput TransformerLayer::compose(const Tensor& x, const SublayerCalls& calls, bool dropout) const {
  // Covers the whole layer; a chunked feed-forward recomputed in backward, after it is gone, casts
  // its parameters one by one.
  std::optional<ParamCastScope> casts;
  if (config_.batch_param_casts) {
    const std::vector<Tensor> params = activation_dtype_parameters();
    if (std::any_of(params.begin(), params.end(), [&](const Tensor& p) { return p.dtype() != x.dtype(); })) {
      casts.emplace(params, x.dtype());
    }
  }
  // By value: a chunked feed-forward runs it again in backward, after this call has returned.
  const auto branch = [this, dropout](const Tensor& t) { return dropout ? dropout_->forward(t) : t; };
  // Without dropout on the branches, each skip is added in the branch's last product (no pass of
  // its own over the residual stream).
  const bool skip_in_product = !dropout || !dropout_->active();
  const auto sublayer = [&](const SublayerCalls::Call& call, const Tensor& skip, const Tensor& normed) {
    if (skip_in_product) return call(normed, skip);
    AttentionLayerOutput a = call(normed, Tensor());
    a.out = add(skip, branch(a.out));
    return a;
  };
  AttentionLayerOutput a = sublayer(calls.self, x, self_attn_layer_norm_->forward(x));
  Tensor h = a.out;
  Tensor aux = a.aux_loss;
  if (encoder_attn_) {
    LN_CHECK(calls.cross != nullptr, "[", type_name(), "] has cross-attention but was given no call for it");
    a = sublayer(calls.cross, h, encoder_attn_layer_norm_->forward(h));
    h = a.out;
    aux = add_loss(aux, a.aux_loss);
  }
  const RowwiseFn ffn_branch = [this, branch](const Tensor& t) {
    return branch(ffn_->forward(final_layer_norm_->forward(t)));
  };
  if (config_.ffn_checkpoint == "chunked") {
    h = add(h, checkpoint_rows(ffn_branch, h, config_.ffn_checkpoint_chunk));
  } else if (skip_in_product) {
    h = ffn_->forward(final_layer_norm_->forward(h), h);
  } else {
    h = add(h, ffn_branch(h));
  }
  return {h, aux};
}

LayerOutput TransformerLayer::run(const Tensor& x, const Tensor& memory, const LayerContext& context) const {
  AttentionCall self_call;
  self_call.causal = causal_;
  self_call.key_padding_mask = context.padding_mask;
  self_call.positions = context.positions;
  self_call.attend = context.self_attend;
  SublayerCalls calls;
  calls.self = [&](const Tensor& h, const Tensor& residual) {
    AttentionCall call = self_call;
    call.residual = residual;
    return self_attn_->forward(h, Tensor(), call);
  };
  if (encoder_attn_) {
    LN_CHECK(memory.defined(), "[DecoderLayer] has cross-attention but was given no encoder output");
    calls.cross = [&](const Tensor& h, const Tensor& residual) {
      AttentionCall cross_call;
      cross_call.key_padding_mask = context.memory_padding_mask;
      cross_call.residual = residual;
      return encoder_attn_->forward(h, memory, cross_call);
    };
  }
  return compose(x, calls, true);
}

LayerOutput TransformerLayer::forward(const Tensor& x, const LayerContext& context) const {
  LN_CHECK(x.defined() && x.dim() == 3 && x.size(2) == config_.dim, "[", type_name(), "] expects x (B, N, ", config_.dim,
           "), got ", x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  LN_CHECK(!context.memory.defined() || encoder_attn_, "[", type_name(),
           "] was given an encoder output but has no cross-attention");
  if (!config_.checkpoint) return run(x, context.memory, context);
  // The masks and offset are constants of the block; x and the encoder output are its inputs, so
  // gradients reach both through the recomputation.
  std::vector<Tensor> inputs{x};
  if (context.memory.defined()) inputs.push_back(context.memory);
  const CheckpointFn fn = [this, context](const std::vector<Tensor>& in) {
    const LayerOutput o = run(in[0], in.size() > 1 ? in[1] : Tensor(), context);
    return o.aux_loss.defined() ? std::vector<Tensor>{o.x, o.aux_loss} : std::vector<Tensor>{o.x};
  };
  const std::vector<Tensor> out = checkpoint(fn, inputs);
  return {out[0], out.size() > 1 ? out[1] : Tensor()};
}

EncoderLayer::EncoderLayer(const TransformerLayerConfig& config, Initializer& init,
                           std::shared_ptr<const RotaryEmbedding> positions)
    : TransformerLayer(config, false, init, std::move(positions)) {}

DecoderLayer::DecoderLayer(const TransformerLayerConfig& config, Initializer& init,
                           std::shared_ptr<const RotaryEmbedding> positions)
    : TransformerLayer(config, true, init, std::move(positions)) {}

}  // namespace longnet
