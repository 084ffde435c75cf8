#include "framework/ops/factory.h"

#include <cmath>

#include "framework/cpu/random.h"
#include "framework/ops/copy.h"

namespace longnet {

Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  fill_(t, value);
  return t;
}

Tensor zeros_like(const Tensor& like) { return zeros(like.shape(), like.dtype(), like.device()); }
Tensor ones_like(const Tensor& like) { return ones(like.shape(), like.dtype(), like.device()); }
Tensor full_like(const Tensor& like, double value) {
  return full(like.shape(), value, like.dtype(), like.device());
}

Tensor arange(double start, double end, double step, DType dtype, Device device) {
  LN_CHECK(step != 0.0, "[arange] step must be non-zero");
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((end - start) / step)));
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = start + static_cast<double>(i) * step;
  return cast(from_vector<double>(v, {n}, Device::cpu()), dtype).to(device);
}

namespace {

// Draws in f32 on the host, then converts: the same seed gives the same values on every device.
Tensor random_tensor(const Shape& shape, DType dtype, Device device, Generator* gen, bool normal) {
  LN_CHECK(is_floating(dtype), "[", normal ? "randn" : "rand", "] needs a float dtype, got ",
           dtype_name(dtype));
  Generator& g = gen ? *gen : default_generator();
  Tensor t = Tensor::empty(shape, DType::F32, Device::cpu());
  cpu::RandomParams p{t.data<float>(), t.numel(), g.state().seed, g.reserve(t.numel())};
  if (normal) {
    cpu::normal(p);
  } else {
    cpu::uniform(p);
  }
  return cast(t, dtype).to(device);
}

}  // namespace

Tensor rand(const Shape& shape, DType dtype, Device device, Generator* gen) {
  return random_tensor(shape, dtype, device, gen, false);
}

Tensor randn(const Shape& shape, DType dtype, Device device, Generator* gen) {
  return random_tensor(shape, dtype, device, gen, true);
}

Tensor randint(int64_t low, int64_t high, const Shape& shape, DType dtype, Device device,
               Generator* gen) {
  LN_CHECK(high > low, "[randint] empty range [", low, ", ", high, ")");
  Tensor u = rand(shape, DType::F64, Device::cpu(), gen);
  std::vector<int64_t> v(static_cast<size_t>(u.numel()));
  const double* pu = u.data<double>();
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = std::min(high - 1, low + static_cast<int64_t>(pu[i] * static_cast<double>(high - low)));
  }
  return cast(from_vector<int64_t>(v, shape, Device::cpu()), dtype).to(device);
}

template <class T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  LN_CHECK(static_cast<int64_t>(values.size()) == numel_of(shape), "[from_vector] ", values.size(),
           " values for shape ", shape_str(shape));
  Tensor t = Tensor::empty(shape, dtype_of_v<T>, Device::cpu());
  T* p = t.data<T>();
  for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
  return t.to(device);
}

template Tensor from_vector<float>(const std::vector<float>&, const Shape&, Device);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, Device);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, Device);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, Device);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, Device);
template Tensor from_vector<BFloat16>(const std::vector<BFloat16>&, const Shape&, Device);
template Tensor from_vector<Half>(const std::vector<Half>&, const Shape&, Device);

Tensor tensor(const std::vector<float>& values, const Shape& shape, Device device) {
  return from_vector<float>(values, shape, device);
}

Tensor scalar_tensor(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

}  // namespace longnet
