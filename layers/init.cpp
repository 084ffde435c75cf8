#include "layers/init.h"

#include <cmath>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"

namespace longnet {

Tensor Initializer::normal(const Shape& shape, double std) {
  if (!fill_) return Tensor::empty(shape, dtype_);
  NoGradGuard no_grad;
  return mul(randn(shape, DType::F32, Device::cpu(), &gen_), std).to(dtype_).to(default_device());
}

Tensor Initializer::uniform(const Shape& shape, double bound) {
  if (!fill_) return Tensor::empty(shape, dtype_);
  NoGradGuard no_grad;
  const Tensor u = rand(shape, DType::F32, Device::cpu(), &gen_);
  return add(mul(u, 2.0 * bound), -bound).to(dtype_).to(default_device());
}

Tensor Initializer::xavier_uniform(int64_t fan_out, int64_t fan_in, double gain) {
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  return uniform({fan_out, fan_in}, bound);
}

Tensor Initializer::constant(const Shape& shape, double value) {
  if (!fill_) return Tensor::empty(shape, dtype_);
  return full(shape, value, dtype_);
}

}  // namespace longnet
