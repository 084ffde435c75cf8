#include "tests/support/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

namespace longnet::testing {

Tensor leaf(const Shape& shape, uint64_t seed, double scale) {
  Generator g(seed);
  Tensor t = randn(shape, DType::F64, Device::cpu(), &g);
  if (scale != 1.0) {
    NoGradGuard ng;
    t = mul(t, scale);
  }
  return t.requires_grad_(true);
}

std::string error_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a longnet::Error";
  return "";
}

::testing::AssertionResult all_close(const Tensor& a, const Tensor& b, double atol, double rtol) {
  if (a.shape() != b.shape()) {
    return ::testing::AssertionFailure()
           << "shape " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  }
  const auto va = a.to_vector<double>(), vb = b.to_vector<double>();
  double worst = 0.0;
  size_t at = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    const double err = std::abs(va[i] - vb[i]) - (atol + rtol * std::abs(vb[i]));
    if (std::isnan(va[i]) != std::isnan(vb[i]) || err > worst) {
      worst = std::isnan(err) ? INFINITY : err;
      at = i;
      if (std::isinf(worst)) break;
    }
  }
  if (worst > 0.0) {
    return ::testing::AssertionFailure() << "element " << at << ": " << va[at] << " vs " << vb[at]
                                         << " (shape " << shape_str(a.shape()) << ")";
  }
  return ::testing::AssertionSuccess();
}

double relative_error(const Tensor& got, const Tensor& ref) {
  EXPECT_EQ(got.numel(), ref.numel());
  if (got.numel() != ref.numel()) return std::numeric_limits<double>::infinity();
  const std::vector<double> g = got.to_vector<double>(), r = ref.to_vector<double>();
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < r.size(); ++i) {
    if (std::isinf(r[i]) && g[i] == r[i]) continue;
    diff += (g[i] - r[i]) * (g[i] - r[i]);
    norm += r[i] * r[i];
  }
  return std::sqrt(diff / std::max(norm, 1e-300));
}

::testing::AssertionResult gradcheck(const TensorFn& fn, const std::vector<Tensor>& inputs,
                                     GradcheckOptions opt) {
  for (const Tensor& t : inputs) {
    if (t.requires_grad() && (t.dtype() != DType::F64 || !t.is_contiguous() || !t.is_leaf())) {
      return ::testing::AssertionFailure() << "gradcheck inputs must be contiguous f64 leaves";
    }
    if (t.requires_grad()) t.set_grad(Tensor());
  }
  Tensor out = fn(inputs);
  Generator g(1234);
  const Tensor w = randn(out.shape(), DType::F64, Device::cpu(), &g);
  sum(mul(out.to(DType::F64), w)).backward();
  auto objective = [&]() {
    NoGradGuard ng;
    return sum(mul(fn(inputs).to(DType::F64), w)).item();
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    const Tensor analytic = x.grad();
    if (!analytic.defined()) return ::testing::AssertionFailure() << "input " << k << " got no gradient";
    const auto va = analytic.to_vector<double>();
    double* p = x.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double orig = p[i];
      p[i] = orig + opt.eps;
      const double fp = objective();
      p[i] = orig - opt.eps;
      const double fm = objective();
      p[i] = orig;
      const double numeric = (fp - fm) / (2.0 * opt.eps);
      const double a = va[static_cast<size_t>(i)];
      if (!(std::abs(a - numeric) <= opt.atol + opt.rtol * std::abs(numeric))) {
        return ::testing::AssertionFailure() << "input " << k << " element " << i << ": analytic " << a
                                             << " vs numeric " << numeric;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace longnet::testing
