#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "framework/core/error.h"

namespace longnet::optim {
namespace {

bool decays_to_horizon(const std::string& name) { return name == "cosine" || name == "linear" || name == "polynomial"; }

}  // namespace

std::vector<std::string> lr_schedule_names() { return {"constant", "cosine", "linear", "polynomial", "inverse_sqrt"}; }

void LrSchedule::validate() const {
  const std::vector<std::string> names = lr_schedule_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    LN_FAIL("[lr_schedule] unknown schedule '", name, "' (known: constant, cosine, linear, polynomial, inverse_sqrt)");
  }
  LN_CHECK(std::isfinite(lr) && lr >= 0.0, "[lr_schedule] lr must be finite and >= 0, got ", lr);
  LN_CHECK(std::isfinite(min_lr) && min_lr >= 0.0 && min_lr <= lr, "[lr_schedule] min_lr must lie in [0, lr = ", lr,
           "], got ", min_lr);
  LN_CHECK(warmup_steps >= 0, "[lr_schedule] warmup_steps must be >= 0, got ", warmup_steps);
  LN_CHECK(std::isfinite(power) && power > 0.0, "[lr_schedule] power must be > 0, got ", power);
  if (decays_to_horizon(name)) {
    LN_CHECK(total_steps > warmup_steps, "[lr_schedule] '", name, "' decays until total_steps, which must exceed ",
             "warmup_steps (", warmup_steps, "), got ", total_steps);
  }
}

double LrSchedule::at(int64_t step) const {
  LN_CHECK(step >= 0, "[lr_schedule] step must be >= 0, got ", step);
  const double n = static_cast<double>(step) + 1.0;
  const double w = static_cast<double>(warmup_steps);
  if (n <= w) return lr * n / w;
  if (name == "constant") return lr;
  if (name == "inverse_sqrt") return std::max(min_lr, lr * std::sqrt(std::max(w, 1.0) / n));
  if (!decays_to_horizon(name)) validate();  // throws for the unknown name
  LN_CHECK(total_steps > warmup_steps, "[lr_schedule] '", name, "' needs total_steps > warmup_steps, got ",
           total_steps, " and ", warmup_steps);
  const double p = std::clamp((n - w) / (static_cast<double>(total_steps) - w), 0.0, 1.0);
  if (name == "cosine") return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * p));
  if (name == "linear") return lr + (min_lr - lr) * p;
  return min_lr + (lr - min_lr) * std::pow(1.0 - p, power);
}

}  // namespace longnet::optim
