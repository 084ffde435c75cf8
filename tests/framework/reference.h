#pragma once
// Naive references for op tests: plain loops over std::vector<double>, independent of the
// framework's kernels, plus leaves whose values stay away from the kinks of the op under test.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"

namespace longnet::testing {

/// The multi-index of row-major position `flat` in `shape`.
inline std::vector<int64_t> unravel(int64_t flat, const Shape& shape) {
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

/// The row-major position of multi-index `idx` in `shape`.
inline int64_t ravel(const std::vector<int64_t>& idx, const Shape& shape) {
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + idx[d];
  return flat;
}

/// f(a, b) elementwise under NumPy broadcasting; returns the values in row-major order of the
/// broadcast shape, which is written to `out_shape`.
inline std::vector<double> naive_broadcast(const std::vector<double>& a, const Shape& sa,
                                           const std::vector<double>& b, const Shape& sb,
                                           const std::function<double(double, double)>& f,
                                           Shape* out_shape = nullptr) {
  const size_t n = std::max(sa.size(), sb.size());
  Shape pa(n - sa.size(), 1), pb(n - sb.size(), 1), out(n);
  pa.insert(pa.end(), sa.begin(), sa.end());
  pb.insert(pb.end(), sb.begin(), sb.end());
  for (size_t d = 0; d < n; ++d) out[d] = std::max(pa[d], pb[d]);
  int64_t total = 1;
  for (int64_t s : out) total *= s;
  std::vector<double> r(static_cast<size_t>(total));
  for (int64_t i = 0; i < total; ++i) {
    const auto idx = unravel(i, out);
    std::vector<int64_t> ia(n), ib(n);
    for (size_t d = 0; d < n; ++d) {
      ia[d] = pa[d] == 1 ? 0 : idx[d];
      ib[d] = pb[d] == 1 ? 0 : idx[d];
    }
    r[static_cast<size_t>(i)] = f(a[static_cast<size_t>(ravel(ia, pa))], b[static_cast<size_t>(ravel(ib, pb))]);
  }
  if (out_shape) *out_shape = out;
  return r;
}

/// Reduces the values of each group (elements that agree on every dim not in `dims`) with f;
/// the result is in row-major order of the shape with the reduced dims removed.
inline std::vector<double> naive_reduce(const std::vector<double>& x, const Shape& shape,
                                        const std::vector<int64_t>& dims,
                                        const std::function<double(const std::vector<double>&)>& f) {
  Shape kept;
  std::vector<bool> reduced(shape.size(), false);
  for (int64_t d : dims) reduced[static_cast<size_t>(d < 0 ? d + static_cast<int64_t>(shape.size()) : d)] = true;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (!reduced[d]) kept.push_back(shape[d]);
  }
  int64_t groups = 1;
  for (int64_t s : kept) groups *= s;
  std::vector<std::vector<double>> members(static_cast<size_t>(groups));
  for (size_t i = 0; i < x.size(); ++i) {
    const auto idx = unravel(static_cast<int64_t>(i), shape);
    std::vector<int64_t> k;
    for (size_t d = 0; d < shape.size(); ++d) {
      if (!reduced[d]) k.push_back(idx[d]);
    }
    members[static_cast<size_t>(ravel(k, kept))].push_back(x[i]);
  }
  std::vector<double> r;
  for (const auto& m : members) r.push_back(f(m));
  return r;
}

/// Checks every |got - want| <= atol + rtol * |want| (NaN matches NaN, inf matches equal inf).
inline ::testing::AssertionResult near_all(const std::vector<double>& got, const std::vector<double>& want,
                                           double atol, double rtol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << got.size() << " values vs " << want.size() << " expected";
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    if (std::isnan(w) ? std::isnan(g) : (g == w || std::abs(g - w) <= atol + rtol * std::abs(w))) continue;
    return ::testing::AssertionFailure() << "element " << i << ": " << g << " vs expected " << w;
  }
  return ::testing::AssertionSuccess();
}

/// Where the inputs of a gradient check must lie so the op is smooth around them.
enum class Domain { Any, Positive, AwayFromZero };

/// Deterministic values (standard normal, then moved into the domain); points within `margin` of
/// any of `kinks` are pushed past them so finite differences never straddle a kink.
inline std::vector<double> domain_values(int64_t n, uint64_t seed, Domain domain,
                                         const std::vector<double>& kinks = {}, double margin = 0.05) {
  Generator g(seed);
  std::vector<double> v = randn({n}, DType::F64, Device::cpu(), &g).to_vector<double>();
  for (double& x : v) {
    if (domain == Domain::Positive) x = 0.3 + std::abs(x);
    if (domain == Domain::AwayFromZero && std::abs(x) < 0.1) x = x < 0 ? x - 0.2 : x + 0.2;
    for (double k : kinks) {
      if (std::abs(x - k) < margin) x = k + (x < k ? -2 : 2) * margin;
    }
  }
  return v;
}

/// An f64 leaf that requires grad, with domain_values.
inline Tensor domain_leaf(const Shape& shape, uint64_t seed, Domain domain,
                          const std::vector<double>& kinks = {}) {
  return from_vector<double>(domain_values(numel_of(shape), seed, domain, kinks), shape).requires_grad_(true);
}

}  // namespace longnet::testing
