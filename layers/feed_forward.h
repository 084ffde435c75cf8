#pragma once
// The position-wise feed-forward block of a transformer layer.
#include <memory>
#include <string>

#include "layers/dropout.h"
#include "layers/linear.h"
#include "layers/norm.h"

namespace longnet {

/// Shape and options of a FeedForward block.
struct FeedForwardConfig {
  int64_t dim = 0;
  int64_t hidden = 0;
  /// gelu: fc2(gelu(fc1 x)); swiglu: fc2(silu(gate x) * fc1 x) (a third projection, `gate`).
  std::string kind = "gelu";
  /// MAGNETO's sub-LN: a norm of the hidden activations before fc2 (`ffn_layernorm`).
  bool sub_ln = false;
  std::string norm = "layer_norm";
  double norm_eps = 0.0;  // <= 0: the norm's default
  /// Dropout of the hidden activations (after the activation function).
  double activation_dropout = 0.0;
  bool bias = true;
  /// gelu with sub_ln and activation dropout in training: recompute the activation and the
  /// sub-LN in backward, so that the graph keeps fc1's output alone instead of also the
  /// activation's output (hidden-sized). Without that dropout the two run as one fused op
  /// (gelu_layer_norm), which keeps fc1's output alone either way.
  bool recompute_activation = true;
};

/// Feed-forward block: (..., dim) -> (..., dim) through `hidden` units. Submodules fc1, gate
/// (swiglu), ffn_layernorm (sub-LN), fc2, as torchscale names them.
class FeedForward : public Module {
 public:
  FeedForward(const FeedForwardConfig& config, Initializer& init);
  std::string type_name() const override { return "FeedForward"; }
  /// (..., dim) -> (..., dim); plus `residual` when given, added in fc2's product (the layer's skip).
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const;
  const FeedForwardConfig& config() const { return config_; }

 private:
  // The activated hidden units (..., hidden) after activation dropout and the sub-LN (if any).
  Tensor hidden(const Tensor& activated) const;

  FeedForwardConfig config_;
  std::shared_ptr<Linear> fc1_, gate_, fc2_;
  std::shared_ptr<Norm> ffn_layernorm_;
  std::shared_ptr<Dropout> activation_dropout_;
};

}  // namespace longnet
