#pragma once
// Fully connected layer.
#include "layers/init.h"
#include "layers/module.h"

namespace longnet {

/// y = x W^T + b: x (..., in) -> (..., out). W (out, in) is Xavier-uniform with `gain`, b zero.
/// Parameters are cast to the input's dtype on use (f32 master weights, 16-bit activations).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias, Initializer& init, double gain = 1.0);
  /// Wraps given initial values: weight (out, in), bias (out) or undefined.
  Linear(Tensor weight, Tensor bias);
  std::string type_name() const override { return "Linear"; }
  /// (..., in) -> (..., out); plus `residual` (..., out) when given, added in the product (a
  /// residual block's skip, see linear_residual).
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const;

  const Tensor& weight() const { return weight_; }
  /// Undefined without bias.
  const Tensor& bias() const { return bias_; }
  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }

 private:
  Tensor weight_, bias_;
};

}  // namespace longnet
