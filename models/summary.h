#pragma once
// A printable summary of a model: its modules with their parameter shapes and counts, and totals.
#include <string>

#include "layers/module.h"
#include "models/config.h"

namespace longnet {

/// Options of model_summary.
struct SummaryOptions {
  /// Deepest module level listed on its own ("decoder.layers.3" is level 3); deeper modules are
  /// counted in their ancestor's row. Negative: every module that holds parameters.
  int max_depth = -1;
  /// When set, the analytic parameter count of the config is printed next to the counted total.
  const ModelConfig* config = nullptr;
};

/// A text table: module name, type, parameter shapes, parameter count; then the total, its size in
/// f32, and the analytic count when a config is given.
std::string model_summary(const Module& model, const SummaryOptions& options = {});

/// "124.4M", "2.65B", "9.3K": a count with an SI suffix.
std::string human_count(int64_t n);

}  // namespace longnet
