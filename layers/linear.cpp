#include "layers/linear.h"

#include "framework/ops/matmul.h"

namespace longnet {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Initializer& init, double gain) {
  LN_CHECK(in_features > 0 && out_features > 0, "[Linear] sizes must be positive, got in ", in_features, ", out ",
           out_features);
  weight_ = register_parameter("weight", init.xavier_uniform(out_features, in_features, gain));
  if (bias) bias_ = register_parameter("bias", init.constant({out_features}, 0.0));
}

Linear::Linear(Tensor weight, Tensor bias) {
  LN_CHECK(weight.defined() && weight.dim() == 2, "[Linear] weight must be (out, in), got ",
           weight.defined() ? shape_str(weight.shape()) : std::string("undefined"));
  LN_CHECK(!bias.defined() || bias.shape() == Shape{weight.size(0)}, "[Linear] bias must be (", weight.size(0), "), got ",
           bias.defined() ? shape_str(bias.shape()) : std::string(""));
  weight_ = register_parameter("weight", std::move(weight));
  if (bias.defined()) bias_ = register_parameter("bias", std::move(bias));
}

Tensor Linear::forward(const Tensor& x, const Tensor& residual) const {
  LN_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == in_features(), "[Linear] expects (..., ", in_features(),
           "), got ", x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  return linear_residual(x, in_dtype_of(weight_, x), in_dtype_of(bias_, x), residual);
}

}  // namespace longnet
