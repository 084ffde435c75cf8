#pragma once
// A progress line for long passes over a corpus: a bar by bytes, documents, rates and ETA.
#include <chrono>
#include <cstdint>
#include <ostream>
#include <string>

namespace longnet::data {

/// Draws "[label] [#####.....]  41%  205/497 docs  4.9/12.0 MB  1.2k docs/s  3.1 MB/s  ETA 2s".
/// Interactive: redrawn in place (carriage return) at most 10 times a second. Otherwise a line
/// every 10 seconds, so logs stay short.
class ProgressBar {
 public:
  ProgressBar(std::ostream& out, std::string label, uint64_t total_bytes, int64_t total_documents,
              bool interactive);
  /// Reports progress; draws when due.
  void update(int64_t documents, uint64_t bytes);
  /// Draws the final state and ends the line.
  void finish(int64_t documents, uint64_t bytes);
  /// The line as it would be drawn now (for tests).
  std::string render(int64_t documents, uint64_t bytes, double seconds) const;

 private:
  using Clock = std::chrono::steady_clock;
  std::ostream& out_;
  std::string label_;
  uint64_t total_bytes_;
  int64_t total_documents_;
  bool interactive_;
  Clock::time_point start_, last_draw_;
};

}  // namespace longnet::data
