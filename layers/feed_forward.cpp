#include "layers/feed_forward.h"

#include "framework/autograd/checkpoint.h"
#include "framework/ops/elementwise.h"

namespace longnet {

FeedForward::FeedForward(const FeedForwardConfig& c, Initializer& init) : config_(c) {
  LN_CHECK(c.kind == "gelu" || c.kind == "swiglu", "[FeedForward] unknown kind '", c.kind, "'; known: gelu, swiglu");
  LN_CHECK(c.dim > 0 && c.hidden > 0, "[FeedForward] dim and hidden must be positive, got ", c.dim, " and ", c.hidden);
  fc1_ = register_module("fc1", std::make_shared<Linear>(c.dim, c.hidden, c.bias, init));
  if (c.kind == "swiglu") gate_ = register_module("gate", std::make_shared<Linear>(c.dim, c.hidden, c.bias, init));
  activation_dropout_ = register_module("activation_dropout", std::make_shared<Dropout>(c.activation_dropout));
  if (c.sub_ln) ffn_layernorm_ = register_module("ffn_layernorm", make_norm(c.norm, c.hidden, init, c.norm_eps));
  fc2_ = register_module("fc2", std::make_shared<Linear>(c.hidden, c.dim, c.bias, init));
}

Tensor FeedForward::hidden(const Tensor& activated) const {
  const Tensor h = activation_dropout_->forward(activated);
  return ffn_layernorm_ ? ffn_layernorm_->forward(h) : h;
}

Tensor FeedForward::forward(const Tensor& x, const Tensor& residual) const {
  if (gate_) return fc2_->forward(hidden(mul(silu(gate_->forward(x)), fc1_->forward(x))), residual);
  const Tensor pre = fc1_->forward(x);
  // GELU and the sub-LN in one fused op: no GELU output is written, read or kept.
  if (ffn_layernorm_ && !activation_dropout_->active()) {
    return fc2_->forward(ffn_layernorm_->forward_gelu(pre), residual);
  }
  if (!ffn_layernorm_ || !config_.recompute_activation) return fc2_->forward(hidden(gelu(pre)), residual);
  // GELU and the sub-LN as one recomputed block: the graph keeps fc1's output alone instead of
  // also the GELU output the norm reads (hidden-sized, the largest activations of a layer). The
  // recomputation is elementwise work and gives the same values, so the gradients are unchanged.
  const CheckpointFn block = [this](const std::vector<Tensor>& in) { return std::vector<Tensor>{hidden(gelu(in[0]))}; };
  return fc2_->forward(checkpoint(block, {pre})[0], residual);
}

}  // namespace longnet
