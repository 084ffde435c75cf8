#pragma once
// Run metrics: records (step, split, values) written as JSON lines and TensorBoard scalars, and
// the live console line (step/total, loss, lr, grad norm, tokens/s, MFU, memory, ETA) that
// rewrites itself in place on a terminal and prints plain lines otherwise.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "framework/io/tensorboard.h"

namespace longnet::tools {

/// One line of metrics: values of one split ("train", "valid") at one step.
struct MetricsRecord {
  int64_t step = 0;
  std::string split = "train";
  double time = 0.0;  // seconds since the epoch
  /// Named values in order: loss, lr, grad_norm, tokens_per_s, ... (NaN is written as null).
  std::vector<std::pair<std::string, double>> values;

  /// The value named `name`, if present.
  std::optional<double> get(const std::string& name) const;
};

/// Appends records to a JSONL file, one object per line, flushed per record:
/// {"step": 10, "split": "train", "time": 1.7e9, "loss": 3.2, "lr": 0.0006}.
class JsonlWriter {
 public:
  /// Opens `path` for appending (a resumed run continues its file), creating directories. With
  /// `keep_through`, records of later steps are dropped first: a run that resumes from step s
  /// repeats the updates after s, whose old records would otherwise appear twice.
  explicit JsonlWriter(const std::filesystem::path& path, std::optional<int64_t> keep_through = std::nullopt);
  void write(const MetricsRecord& record);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

/// Every record of a JSONL metrics file, in file order. A torn last line (a run killed mid-write)
/// is skipped; any other malformed line throws naming its line number.
std::vector<MetricsRecord> read_metrics_jsonl(const std::filesystem::path& path);

/// Sends records to `run_dir`/metrics.jsonl and to TensorBoard under `run_dir`/tensorboard (tags
/// "<split>/<name>"), each when enabled.
class MetricsLogger {
 public:
  /// `resume_step`: the step the run starts from (0: a fresh start); the JSONL file keeps only the
  /// records up to it.
  MetricsLogger(const std::filesystem::path& run_dir, bool jsonl, bool tensorboard, int64_t resume_step = 0);
  void log(const MetricsRecord& record);

 private:
  std::unique_ptr<JsonlWriter> jsonl_;
  std::unique_ptr<io::TensorBoardWriter> tensorboard_;
};

/// What the console line shows; unset fields are left out.
struct Progress {
  int64_t step = 0;  // updates done
  int64_t total_steps = 0;
  std::optional<double> loss, lr, grad_norm, tokens_per_s;
  std::optional<double> mfu;              // model FLOPs utilisation, 0..1
  std::optional<int64_t> memory_bytes;    // peak device memory since the previous logged step
  std::optional<double> eta_seconds;
};

/// "step 120/300 (40%) | loss 3.2140 | lr 6.00e-04 | gnorm 0.820 | 12.3k tok/s | MFU 31.2% |
/// mem 1.20 GiB | ETA 2m31s"
std::string format_progress(const Progress& p);
/// "45s", "2m31s", "3h04m", "2d05h".
std::string format_duration(double seconds);

/// The live console line. On a terminal each update overwrites the line (carriage return and
/// clear to end of line); otherwise each update is a line of its own. ETA comes from the rate
/// since the first update.
class ConsoleLine {
 public:
  /// `tty` forces the mode; by default it follows isatty(out).
  explicit ConsoleLine(std::FILE* out = stdout, std::optional<bool> tty = std::nullopt);
  ~ConsoleLine();
  /// Shows `p` (its eta_seconds is filled in when unset and enough is known).
  void update(Progress p);
  /// Prints a line of its own (an evaluation result, a warning) without losing the live line.
  void message(const std::string& text);
  /// Ends the live line with a newline (on a terminal).
  void finish();

 private:
  std::FILE* out_;
  bool tty_;
  bool line_open_ = false;
  std::string last_;
  std::optional<std::pair<int64_t, std::chrono::steady_clock::time_point>> first_;
};

}  // namespace longnet::tools
