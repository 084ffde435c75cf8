#pragma once
// Dropout as a layer: active only while the module is training.
#include "layers/module.h"

namespace longnet {

/// Zeroes elements with probability p and rescales the rest by 1 / (1 - p) in training; identity
/// in eval mode or with p = 0. Masks come from the default Philox stream, so activation
/// checkpointing replays them.
class Dropout : public Module {
 public:
  explicit Dropout(double p);
  std::string type_name() const override { return "Dropout"; }
  Tensor forward(const Tensor& x) const;
  double p() const { return p_; }
  /// Whether forward changes its input (p > 0 in training).
  bool active() const { return p_ > 0.0 && is_training(); }

 private:
  double p_;
};

}  // namespace longnet
