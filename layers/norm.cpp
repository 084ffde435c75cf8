#include "layers/norm.h"

#include "framework/ops/norm.h"

namespace longnet {
namespace {

void check_input(const char* layer, const Tensor& x, int64_t dim) {
  LN_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) == dim, "[", layer, "] expects (..., ", dim, "), got ",
           x.defined() ? shape_str(x.shape()) : std::string("undefined"));
}

}  // namespace

LayerNorm::LayerNorm(int64_t dim, Initializer& init, double eps) : eps_(eps) {
  LN_CHECK(dim > 0, "[LayerNorm] dim must be positive, got ", dim);
  weight_ = register_parameter("weight", init.constant({dim}, 1.0));
  bias_ = register_parameter("bias", init.constant({dim}, 0.0));
}

Tensor LayerNorm::forward(const Tensor& x) const {
  check_input("LayerNorm", x, weight_.size(0));
  return layer_norm(x, in_dtype_of(weight_, x), in_dtype_of(bias_, x), eps_);
}

Tensor LayerNorm::forward_gelu(const Tensor& pre) const {
  check_input("LayerNorm", pre, weight_.size(0));
  return gelu_layer_norm(pre, in_dtype_of(weight_, pre), in_dtype_of(bias_, pre), eps_);
}

RMSNorm::RMSNorm(int64_t dim, Initializer& init, double eps) : eps_(eps) {
  LN_CHECK(dim > 0, "[RMSNorm] dim must be positive, got ", dim);
  weight_ = register_parameter("weight", init.constant({dim}, 1.0));
}

Tensor RMSNorm::forward(const Tensor& x) const {
  check_input("RMSNorm", x, weight_.size(0));
  return rms_norm(x, in_dtype_of(weight_, x), eps_);
}

Tensor RMSNorm::forward_gelu(const Tensor& pre) const {
  check_input("RMSNorm", pre, weight_.size(0));
  return gelu_rms_norm(pre, in_dtype_of(weight_, pre), eps_);
}

std::shared_ptr<Norm> make_norm(const std::string& kind, int64_t dim, Initializer& init, double eps) {
  if (kind == "layer_norm") return std::make_shared<LayerNorm>(dim, init, eps > 0.0 ? eps : 1e-5);
  if (kind == "rms_norm") return std::make_shared<RMSNorm>(dim, init, eps > 0.0 ? eps : 1e-6);
  LN_FAIL("[norm] unknown norm kind '", kind, "'; known: layer_norm, rms_norm");
}

}  // namespace longnet
