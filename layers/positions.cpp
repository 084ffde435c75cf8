#include "layers/positions.h"

#include <cmath>
#include <vector>

#include "framework/ops/copy.h"
#include "framework/ops/factory.h"
#include "framework/ops/rotary.h"
#include "framework/ops/shape_ops.h"

namespace longnet {

Positions Positions::runs(std::vector<std::pair<int64_t, int64_t>> runs) {
  LN_CHECK(!runs.empty(), "[positions] a Positions needs at least one run");
  for (const auto& [start, rows] : runs) {
    LN_CHECK(start >= 0 && rows >= 0, "[positions] runs need non-negative starts and lengths, got (", start, ", ",
             rows, ")");
  }
  Positions p(runs.front().first);
  p.runs_ = std::move(runs);
  return p;
}

std::vector<std::pair<int64_t, int64_t>> Positions::over(int64_t rows) const {
  if (runs_.empty()) return {{offset_, rows}};
  int64_t total = 0;
  for (const auto& r : runs_) total += r.second;
  LN_CHECK(total == rows, "[positions] the runs cover ", total, " rows but the tensor has ", rows);
  return runs_;
}

RotaryEmbedding::RotaryEmbedding(const RotaryConfig& c) : config_(c), xpos_(c.kind == "xpos") {
  LN_CHECK(c.kind == "xpos" || c.kind == "rope", "[positions] unknown kind '", c.kind, "'; known: xpos, rope");
  LN_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, "[positions] head dim must be positive and even, got ", c.head_dim);
  LN_CHECK(c.base > 0.0 && c.scale_base > 0.0, "[positions] base and scale_base must be positive, got ", c.base,
           " and ", c.scale_base);
  LN_CHECK(c.center_period >= 0, "[positions] center_period must be non-negative, got ", c.center_period);
}

int64_t RotaryEmbedding::center_of(int64_t n) const {
  const int64_t p = config_.center_period;
  return p > 0 ? (n / p) * p + p / 2 : config_.center;
}

double RotaryEmbedding::angle(int64_t n, int64_t i) const {
  const double d = static_cast<double>(config_.head_dim);
  return static_cast<double>(n) * std::pow(config_.base, -2.0 * static_cast<double>(i) / d);
}

double RotaryEmbedding::scale(int64_t n, int64_t i, bool is_key) const {
  if (!xpos_) return 1.0;
  const double d = static_cast<double>(config_.head_dim);
  const double zeta = (2.0 * static_cast<double>(i) + 0.4 * d) / (1.4 * d);
  const double power = static_cast<double>(n - center_of(n)) / config_.scale_base;
  return std::pow(zeta, is_key ? -power : power);
}

RotaryEmbedding::Tables RotaryEmbedding::tables(int64_t n, int64_t offset, bool is_key, DType dtype,
                                                Device device) const {
  // Zigzag ranks alternate between two runs per call; a few entries keep both cached.
  constexpr size_t kCached = 4;
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Tables>& cache = cached_[is_key ? 1 : 0];
  for (const Tables& c : cache) {
    if (c.n == n && c.offset == offset && c.dtype == dtype && c.device == device) return c;
  }
  const int64_t half = config_.head_dim / 2;
  std::vector<double> cos_v(static_cast<size_t>(n * half)), sin_v(cos_v.size());
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = angle(offset + p, i), s = scale(offset + p, i, is_key);
      cos_v[static_cast<size_t>(p * half + i)] = std::cos(a) * s;
      sin_v[static_cast<size_t>(p * half + i)] = std::sin(a) * s;
    }
  }
  const auto make = [&](const std::vector<double>& v) {
    return cast(from_vector(v, {n, half}, Device::cpu()), dtype).to(device);
  };
  if (cache.size() == kCached) cache.erase(cache.begin());
  cache.push_back(Tables{n, offset, dtype, device, make(cos_v), make(sin_v)});
  return cache.back();
}

Tensor RotaryEmbedding::apply(const Tensor& x, const Positions& positions, bool is_key) const {
  LN_CHECK(x.defined() && x.dim() == 4 && x.size(3) == config_.head_dim, "[positions] expects (B, N, H, ",
           config_.head_dim, "), got ", x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  const std::vector<std::pair<int64_t, int64_t>> runs = positions.over(x.size(1));
  if (runs.size() == 1) return apply_run(x, runs.front().first, is_key);
  std::vector<Tensor> parts;
  int64_t row = 0;
  for (const auto& [start, rows] : runs) {
    parts.push_back(apply_run(x.narrow(1, row, rows), start, is_key));
    row += rows;
  }
  return cat(parts, 1);
}

Tensor RotaryEmbedding::apply_run(const Tensor& x, int64_t offset, bool is_key) const {
  LN_CHECK(offset >= 0, "[positions] position offset must be non-negative, got ", offset);
  // The fused op computes 16-bit and f32 inputs in f32 with f32 tables, f64 in f64.
  const DType dt = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
  const Tables t = tables(x.size(1), offset, is_key, dt, x.device());
  return rotate_pairs(x, t.cos, t.sin);
}

}  // namespace longnet
