#pragma once
// Normalisation layers over the last dimension.
#include <memory>
#include <string>

#include "layers/init.h"
#include "layers/module.h"

namespace longnet {

/// A normalisation over the last dim: (..., dim) -> (..., dim).
class Norm : public Module {
 public:
  virtual Tensor forward(const Tensor& x) const = 0;
  /// forward(gelu(pre)) (erf GELU) in one fused pass each way, keeping only `pre` for backward.
  virtual Tensor forward_gelu(const Tensor& pre) const = 0;
};

/// LayerNorm with a learned scale (init 1) and shift (init 0), cast to the input dtype on use.
class LayerNorm final : public Norm {
 public:
  LayerNorm(int64_t dim, Initializer& init, double eps = 1e-5);
  std::string type_name() const override { return "LayerNorm"; }
  Tensor forward(const Tensor& x) const override;
  Tensor forward_gelu(const Tensor& pre) const override;
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }

 private:
  Tensor weight_, bias_;
  double eps_;
};

/// RMSNorm with a learned scale (init 1).
class RMSNorm final : public Norm {
 public:
  RMSNorm(int64_t dim, Initializer& init, double eps = 1e-6);
  std::string type_name() const override { return "RMSNorm"; }
  Tensor forward(const Tensor& x) const override;
  Tensor forward_gelu(const Tensor& pre) const override;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;
  double eps_;
};

/// A norm by name: "layer_norm" or "rms_norm" (eps <= 0 takes the norm's default).
std::shared_ptr<Norm> make_norm(const std::string& kind, int64_t dim, Initializer& init, double eps = 0.0);

}  // namespace longnet
