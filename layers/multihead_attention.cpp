#include "layers/multihead_attention.h"

namespace longnet {
namespace {

// Registers an attention core's own learnable tensors ("0", "1", ...) so that optimizers,
// checkpoints and device moves reach them.
class CoreParameters final : public Module {
 public:
  explicit CoreParameters(const AttentionCore& core) : name_(core.name()) {
    const std::vector<Tensor> params = core.parameters();
    for (size_t i = 0; i < params.size(); ++i) register_parameter(std::to_string(i), params[i]);
  }
  std::string type_name() const override { return "AttentionCore(" + name_ + ")"; }

 private:
  std::string name_;
};

}  // namespace

MultiheadAttention::MultiheadAttention(const MultiheadAttentionConfig& config, Initializer& init,
                                       std::shared_ptr<const RotaryEmbedding> positions)
    : config_(config), positions_(std::move(positions)) {
  const MultiheadAttentionConfig& c = config_;
  LN_CHECK(c.dim > 0 && c.heads > 0 && c.dim % c.heads == 0, "[MultiheadAttention] dim ", c.dim,
           " must be a positive multiple of heads ", c.heads);
  if (config_.kv_dim == 0) config_.kv_dim = c.dim;
  config_.attention.head_dim = head_dim();
  LN_CHECK(!positions_ || positions_->config().head_dim == head_dim(), "[MultiheadAttention] positions are for head dim ",
           positions_ ? positions_->config().head_dim : 0, " but the heads have ", head_dim());
  q_proj_ = register_module("q_proj", std::make_shared<Linear>(c.dim, c.dim, c.bias, init, c.qkv_gain));
  k_proj_ = register_module("k_proj", std::make_shared<Linear>(c.kv_dim, c.dim, c.bias, init, c.qkv_gain));
  v_proj_ = register_module("v_proj", std::make_shared<Linear>(c.kv_dim, c.dim, c.bias, init, c.qkv_gain));
  if (c.sub_ln) inner_attn_ln_ = register_module("inner_attn_ln", make_norm(c.norm, c.dim, init, c.norm_eps));
  out_proj_ = register_module("out_proj", std::make_shared<Linear>(c.dim, c.dim, c.bias, init, c.out_gain));
  core_ = make_attention_core(c.core, config_.attention);
  if (!core_->parameters().empty()) register_module("core", std::make_shared<CoreParameters>(*core_));
}

Tensor MultiheadAttention::split_heads(const Tensor& t) const {
  return t.view({t.size(0), t.size(1), config_.heads, head_dim()});
}

Tensor MultiheadAttention::project_q(const Tensor& x, const Positions& positions) const {
  LN_CHECK(x.defined() && x.dim() == 3 && x.size(2) == config_.dim, "[MultiheadAttention] expects x (B, N, ",
           config_.dim, "), got ", x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  const Tensor q = split_heads(q_proj_->forward(x));
  return positions_ ? positions_->apply(q, positions, false) : q;
}

KeyValue MultiheadAttention::project_kv(const Tensor& source, const Positions& positions) const {
  LN_CHECK(source.defined() && source.dim() == 3 && source.size(2) == config_.kv_dim,
           "[MultiheadAttention] expects keys and values from (B, Nk, ", config_.kv_dim, "), got ",
           source.defined() ? shape_str(source.shape()) : std::string("undefined"));
  const Tensor k = split_heads(k_proj_->forward(source));
  return {positions_ ? positions_->apply(k, positions, true) : k, split_heads(v_proj_->forward(source))};
}

Tensor MultiheadAttention::project_out(const Tensor& attention, const Tensor& residual) const {
  LN_CHECK(attention.dim() == 4 && attention.size(2) == config_.heads && attention.size(3) == head_dim(),
           "[MultiheadAttention] expects the core's output (B, N, ", config_.heads, ", ", head_dim(), "), got ",
           shape_str(attention.shape()));
  Tensor h = attention.reshape({attention.size(0), attention.size(1), config_.dim});
  if (inner_attn_ln_) h = inner_attn_ln_->forward(h);
  return out_proj_->forward(h, residual);
}

AttentionLayerOutput MultiheadAttention::forward(const Tensor& x, const Tensor& memory, const AttentionCall& call) const {
  const bool self = !memory.defined();
  LN_CHECK(self || !call.causal, "[MultiheadAttention] cross-attention cannot be causal");
  const Tensor q = project_q(x, call.positions);
  const KeyValue kv = project_kv(self ? x : memory, call.positions);
  AttentionResult r;
  if (call.attend) {
    r = call.attend(q, kv.k, kv.v);
  } else {
    AttentionOptions options;
    options.causal = call.causal;
    options.key_padding_mask = call.key_padding_mask;
    r = core_->forward(q, kv.k, kv.v, options);
  }
  return {project_out(r.out, call.residual), r.aux_loss};
}

}  // namespace longnet
