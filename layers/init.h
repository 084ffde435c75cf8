#pragma once
// Initial values of new parameters: drawn on the host from one seeded Philox stream (so a seed gives
// the same model on every device) and placed on the default device, or left uninitialised when a
// checkpoint will overwrite them (building a large model then costs no drawing).
#include <cstdint>

#include "framework/core/rng.h"
#include "framework/core/tensor.h"

namespace longnet {

/// Makes parameter tensors for layer constructors, in the parameter dtype, on the default device.
class Initializer {
 public:
  /// `fill` false: every tensor is returned uninitialised (Tensor::empty).
  explicit Initializer(uint64_t seed = 0, bool fill = true, DType dtype = DType::F32)
      : gen_(seed), fill_(fill), dtype_(dtype) {}

  /// N(0, std^2) values.
  Tensor normal(const Shape& shape, double std);
  /// Uniform in [-bound, bound).
  Tensor uniform(const Shape& shape, double bound);
  /// Xavier (Glorot) uniform for a (fan_out, fan_in) weight: bound gain * sqrt(6 / (fan_in + fan_out)).
  Tensor xavier_uniform(int64_t fan_out, int64_t fan_in, double gain = 1.0);
  /// A constant (0 for biases, 1 for norm weights).
  Tensor constant(const Shape& shape, double value);

  /// False when tensors are left uninitialised.
  bool fills() const { return fill_; }
  DType dtype() const { return dtype_; }

 private:
  Generator gen_;
  bool fill_;
  DType dtype_;
};

}  // namespace longnet
