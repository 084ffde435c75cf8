#include "optim/clip.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/reduce.h"

namespace longnet::optim {

double grad_norm(const std::vector<Tensor>& params) {
  NoGradGuard no_grad;
  // One running sum per device, read once: a host sync per tensor would stall a GPU per parameter.
  std::vector<std::pair<Device, Tensor>> sums;
  for (const Tensor& p : params) {
    const Tensor g = p.defined() ? p.grad() : Tensor();
    if (!g.defined() || g.numel() == 0) continue;
    const Device dev = g.device();
    const Tensor wide = g.to(dev.is_cpu() || g.dtype() == DType::F64 ? DType::F64 : DType::F32);
    const Tensor sq = sum(mul(wide, wide));
    auto it = std::find_if(sums.begin(), sums.end(), [&](const auto& s) { return s.first == dev; });
    if (it == sums.end()) {
      sums.emplace_back(dev, sq.to(DType::F64));
    } else {
      it->second = add(it->second, sq.to(DType::F64));
    }
  }
  double total = 0.0;
  for (const auto& [dev, s] : sums) total += s.item();
  return std::sqrt(total);
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  const double norm = grad_norm(params);
  if (!std::isfinite(norm) || max_norm <= 0.0 || norm <= max_norm) return norm;
  const double coef = max_norm / (norm + 1e-6);
  for (const Tensor& p : params) {
    const Tensor g = p.defined() ? p.grad() : Tensor();
    if (g.defined()) mul_(g, coef);
  }
  return norm;
}

}  // namespace longnet::optim
