#include "data/progress.h"

#include <algorithm>
#include <cstdio>

namespace longnet::data {
namespace {

std::string format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

// 950, 1.2k, 3.4M.
std::string compact(double v) {
  if (v >= 1e6) return format("%.1fM", v / 1e6);
  if (v >= 1e3) return format("%.1fk", v / 1e3);
  return format("%.0f", v);
}

}  // namespace

ProgressBar::ProgressBar(std::ostream& out, std::string label, uint64_t total_bytes,
                         int64_t total_documents, bool interactive)
    : out_(out),
      label_(std::move(label)),
      total_bytes_(total_bytes),
      total_documents_(total_documents),
      interactive_(interactive),
      start_(Clock::now()),
      last_draw_(start_) {}

std::string ProgressBar::render(int64_t documents, uint64_t bytes, double seconds) const {
  constexpr int kWidth = 24;
  const double fraction =
      total_bytes_ > 0 ? std::min(1.0, static_cast<double>(bytes) / static_cast<double>(total_bytes_)) : 0.0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string line = "[" + label_ + "] [" + std::string(filled, '#') + std::string(kWidth - filled, '.') + "] ";
  line += format("%3.0f%%  ", fraction * 100);
  line += std::to_string(documents);
  if (total_documents_ > 0) line.append("/").append(std::to_string(total_documents_));
  line += " docs  ";
  line += format("%.1f", static_cast<double>(bytes) / 1e6) + format("/%.1f MB  ", static_cast<double>(total_bytes_) / 1e6);
  if (seconds > 0) {
    line += compact(static_cast<double>(documents) / seconds) + " docs/s  ";
    line += format("%.1f MB/s", static_cast<double>(bytes) / 1e6 / seconds);
    if (fraction > 0 && fraction < 1) line += format("  ETA %.0fs", seconds * (1 - fraction) / fraction);
  }
  return line;
}

void ProgressBar::update(int64_t documents, uint64_t bytes) {
  const Clock::time_point now = Clock::now();
  const auto due = interactive_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(10000);
  if (now - last_draw_ < due) return;
  last_draw_ = now;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  if (interactive_) {
    out_ << "\r" << render(documents, bytes, seconds) << "\033[K" << std::flush;
  } else {
    out_ << render(documents, bytes, seconds) << "\n" << std::flush;
  }
}

void ProgressBar::finish(int64_t documents, uint64_t bytes) {
  const double seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  out_ << (interactive_ ? "\r" : "") << render(documents, bytes, seconds) << (interactive_ ? "\033[K" : "")
       << "\n" << std::flush;
}

}  // namespace longnet::data
