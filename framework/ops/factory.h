#pragma once
// Creating tensors: constants, ranges, random values, host data.
#include <vector>

#include "framework/core/rng.h"
#include "framework/core/tensor.h"

namespace longnet {

/// A tensor of the given shape filled with 0.
Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device device = default_device());
/// A tensor of the given shape filled with 1.
Tensor ones(const Shape& shape, DType dtype = DType::F32, Device device = default_device());
/// A tensor of the given shape filled with `value` (converted to dtype).
Tensor full(const Shape& shape, double value, DType dtype = DType::F32, Device device = default_device());
/// Same shape, dtype and device as `like`, filled with 0 / 1 / value.
Tensor zeros_like(const Tensor& like);
Tensor ones_like(const Tensor& like);
Tensor full_like(const Tensor& like, double value);
/// (ceil((end - start) / step),): start, start + step, ... below end.
Tensor arange(double start, double end, double step = 1.0, DType dtype = DType::I64,
              Device device = default_device());
/// Uniform in [0, 1) from the Philox stream (default stream when gen is null).
Tensor rand(const Shape& shape, DType dtype = DType::F32, Device device = default_device(),
            Generator* gen = nullptr);
/// Standard normal (Box-Muller over pairs of Philox words).
Tensor randn(const Shape& shape, DType dtype = DType::F32, Device device = default_device(),
             Generator* gen = nullptr);
/// Integers uniform in [low, high).
Tensor randint(int64_t low, int64_t high, const Shape& shape, DType dtype = DType::I64,
               Device device = default_device(), Generator* gen = nullptr);
/// A tensor holding a copy of host values (values.size() must equal the shape's numel).
template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = default_device());
/// A float32 tensor from host values.
Tensor tensor(const std::vector<float>& values, const Shape& shape, Device device = default_device());
/// A one-element tensor of shape ().
Tensor scalar_tensor(double value, DType dtype = DType::F32, Device device = default_device());

}  // namespace longnet
