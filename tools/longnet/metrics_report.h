#pragma once
// The run report: one self-contained HTML file (no scripts, no external files) with inline SVG
// curves of a run's metrics (loss, learning rate, gradient norm, tokens/s, then any other metric),
// train and validation together, a summary table and the run's config.
#include <filesystem>
#include <string>
#include <vector>

#include "tools/longnet/metrics.h"

namespace longnet::tools {

/// The report's HTML for `records`; `config_text` (the run's config.toml) is shown when non-empty.
std::string render_report(const std::vector<MetricsRecord>& records, const std::string& title,
                          const std::string& config_text);
/// Reads `run_dir`/metrics.jsonl (and config.toml when present) and writes the report to `out`
/// (default `run_dir`/report.html); returns the path written.
std::filesystem::path write_report(const std::filesystem::path& run_dir, std::filesystem::path out = {});

}  // namespace longnet::tools
