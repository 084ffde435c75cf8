#pragma once
// Learning-rate schedules: a pure function of the update number, so a resumed run needs no
// schedule state. Every schedule starts with an optional linear warm-up.
#include <cstdint>
#include <string>
#include <vector>

namespace longnet::optim {

/// A schedule and its parameters (the lr_scheduler section of a run config).
struct LrSchedule {
  /// constant | cosine | linear | polynomial | inverse_sqrt.
  std::string name = "constant";
  /// The peak learning rate, reached at the end of warm-up.
  double lr = 1e-3;
  /// Updates over which the rate rises linearly from lr / warmup_steps to lr (0: none).
  int64_t warmup_steps = 0;
  /// cosine, linear, polynomial: the update at which the rate reaches min_lr (and stays).
  int64_t total_steps = 0;
  /// The floor the decaying schedules end at (inverse_sqrt: never goes below).
  double min_lr = 0.0;
  /// polynomial: the exponent of (1 - progress); 1 is linear decay.
  double power = 1.0;

  /// The rate for update `step` (0 for the first update):
  ///   n = step + 1; warm-up (n <= warmup_steps): lr * n / warmup_steps; after it, with
  ///   p = (n - warmup) / (total - warmup) clamped to [0, 1]:
  ///   constant: lr; cosine: min + (lr - min) (1 + cos(pi p)) / 2; linear: lr + (min - lr) p;
  ///   polynomial: min + (lr - min) (1 - p)^power; inverse_sqrt: max(min, lr sqrt(max(warmup, 1) / n)).
  double at(int64_t step) const;
  /// Throws naming the bad field (unknown name, negative steps, decay without a horizon, ...).
  void validate() const;
};

/// The schedule names at() accepts.
std::vector<std::string> lr_schedule_names();

}  // namespace longnet::optim
