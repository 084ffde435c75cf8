#include "layers/feed_forward.h"

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

Tensor FeedForward::forward(const Tensor& x) const {
  Tensor h = gate_ ? mul(silu(gate_->forward(x)), fc1_->forward(x)) : gelu(fc1_->forward(x));
  h = activation_dropout_->forward(h);
  if (ffn_layernorm_) h = ffn_layernorm_->forward(h);
  return fc2_->forward(h);
}

}  // namespace longnet
