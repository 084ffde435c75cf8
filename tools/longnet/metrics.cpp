#include "tools/longnet/metrics.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "framework/core/error.h"

namespace longnet::tools {

std::optional<double> MetricsRecord::get(const std::string& name) const {
  for (const auto& [k, v] : values) {
    if (k == name) return v;
  }
  return std::nullopt;
}

namespace {

// Rewrites `path` (through a temporary file and a rename, so a kill leaves the old or the new file)
// without the records after step `keep_through`; a torn last line goes too.
void drop_records_after(const std::filesystem::path& path, int64_t keep_through) {
  std::ifstream in(path, std::ios::binary);
  if (!in.good()) return;
  std::string kept;
  bool dropped = false;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    const bool keep = !j.is_discarded() && j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
                      j["step"].get<int64_t>() <= keep_through;
    if (keep) {
      kept += line + '\n';
    } else {
      dropped = true;
    }
  }
  in.close();
  if (!dropped) return;
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << kept;
    out.flush();
    LN_CHECK(out.good(), "[metrics] error writing '", tmp.string(), "'");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

JsonlWriter::JsonlWriter(const std::filesystem::path& path, std::optional<int64_t> keep_through) : path_(path) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  if (keep_through) drop_records_after(path, *keep_through);
  out_.open(path, std::ios::binary | std::ios::app);
  LN_CHECK(out_.good(), "[metrics] cannot open '", path.string(), "' for appending");
}

void JsonlWriter::write(const MetricsRecord& r) {
  // ordered_json keeps step, split and time first, then the values in their order.
  nlohmann::ordered_json j;
  j["step"] = r.step;
  j["split"] = r.split;
  j["time"] = r.time;
  for (const auto& [k, v] : r.values) {
    LN_CHECK(k != "step" && k != "split" && k != "time", "[metrics] '", k, "' is a reserved field name");
    if (std::isfinite(v)) {
      j[k] = v;
    } else {
      j[k] = nullptr;  // JSON has no NaN or Inf
    }
  }
  out_ << j.dump() << '\n';
  out_.flush();
  LN_CHECK(out_.good(), "[metrics] error writing '", path_.string(), "'");
}

std::vector<MetricsRecord> read_metrics_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  LN_CHECK(in.good(), "[metrics] cannot open '", path.string(), "'");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const bool ends_with_newline = [&] {
    std::ifstream tail(path, std::ios::binary | std::ios::ate);
    if (tail.tellg() <= 0) return true;
    tail.seekg(-1, std::ios::end);
    return tail.get() == '\n';
  }();
  std::vector<MetricsRecord> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    nlohmann::ordered_json j;
    try {
      j = nlohmann::ordered_json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      if (i + 1 == lines.size() && !ends_with_newline) break;  // torn by a kill mid-write
      LN_FAIL("[metrics] ", path.string(), ":", i + 1, ": not JSON: ", e.what());
    }
    LN_CHECK(j.is_object() && j.contains("step") && j["step"].is_number_integer(), "[metrics] ", path.string(), ":",
             i + 1, ": a record needs an integer \"step\"");
    MetricsRecord r;
    r.step = j["step"].get<int64_t>();
    if (j.contains("split") && j["split"].is_string()) r.split = j["split"].get<std::string>();
    if (j.contains("time") && j["time"].is_number()) r.time = j["time"].get<double>();
    for (const auto& [k, v] : j.items()) {
      if (k == "step" || k == "split" || k == "time") continue;
      if (v.is_number()) {
        r.values.emplace_back(k, v.get<double>());
      } else if (v.is_null()) {
        r.values.emplace_back(k, std::numeric_limits<double>::quiet_NaN());
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

MetricsLogger::MetricsLogger(const std::filesystem::path& run_dir, bool jsonl, bool tensorboard, int64_t resume_step) {
  if (jsonl) jsonl_ = std::make_unique<JsonlWriter>(run_dir / "metrics.jsonl", resume_step);
  if (tensorboard) tensorboard_ = std::make_unique<io::TensorBoardWriter>(run_dir / "tensorboard");
}

void MetricsLogger::log(const MetricsRecord& r) {
  if (jsonl_) jsonl_->write(r);
  if (tensorboard_) {
    std::vector<std::pair<std::string, double>> tagged;
    for (const auto& [k, v] : r.values) tagged.emplace_back(r.split + "/" + k, v);
    tensorboard_->add_scalars(tagged, r.step, r.time);
  }
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldd%02lldh", static_cast<long long>(s / 86400), static_cast<long long>(s % 86400 / 3600));
  }
  return buf;
}

namespace {

std::string printf_string(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

// 950, 12.3k, 4.56M.
std::string si(double v) {
  if (v >= 1e9) return printf_string("%.2fG", v / 1e9);
  if (v >= 1e6) return printf_string("%.2fM", v / 1e6);
  if (v >= 1e3) return printf_string("%.1fk", v / 1e3);
  return printf_string("%.0f", v);
}

std::string bytes(int64_t b) {
  const double v = static_cast<double>(b);
  if (v >= 1024.0 * 1024 * 1024) return printf_string("%.2f GiB", v / (1024.0 * 1024 * 1024));
  if (v >= 1024.0 * 1024) return printf_string("%.1f MiB", v / (1024.0 * 1024));
  return printf_string("%.0f KiB", v / 1024.0);
}

}  // namespace

std::string format_progress(const Progress& p) {
  std::string out = "step " + std::to_string(p.step) + "/" + std::to_string(p.total_steps);
  if (p.total_steps > 0) {
    out += " (" + std::to_string(p.step * 100 / p.total_steps) + "%)";
  }
  if (p.loss) out += " | loss " + printf_string("%.4f", *p.loss);
  if (p.lr) out += " | lr " + printf_string("%.2e", *p.lr);
  if (p.grad_norm) out += " | gnorm " + printf_string("%.3g", *p.grad_norm);
  if (p.tokens_per_s) out += " | " + si(*p.tokens_per_s) + " tok/s";
  if (p.mfu) out += " | MFU " + printf_string("%.1f%%", *p.mfu * 100.0);
  if (p.memory_bytes) out += " | mem " + bytes(*p.memory_bytes);
  if (p.eta_seconds) out += " | ETA " + format_duration(*p.eta_seconds);
  return out;
}

ConsoleLine::ConsoleLine(std::FILE* out, std::optional<bool> tty)
    : out_(out), tty_(tty.value_or(::isatty(::fileno(out)) != 0)) {}

ConsoleLine::~ConsoleLine() { finish(); }

void ConsoleLine::update(Progress p) {
  const auto now = std::chrono::steady_clock::now();
  if (!first_) first_ = {p.step, now};
  const int64_t done = p.step - first_->first;
  if (!p.eta_seconds && done > 0 && p.total_steps >= p.step) {
    const double elapsed = std::chrono::duration<double>(now - first_->second).count();
    p.eta_seconds = elapsed / static_cast<double>(done) * static_cast<double>(p.total_steps - p.step);
  }
  last_ = format_progress(p);
  if (tty_) {
    std::fprintf(out_, "\r%s\033[K", last_.c_str());
    line_open_ = true;
  } else {
    std::fprintf(out_, "%s\n", last_.c_str());
  }
  std::fflush(out_);
}

void ConsoleLine::message(const std::string& text) {
  if (tty_ && line_open_) {
    // Clear the live line, print the message, then redraw the live line below it.
    std::fprintf(out_, "\r\033[K%s\n%s", text.c_str(), last_.c_str());
  } else {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
}

void ConsoleLine::finish() {
  if (tty_ && line_open_) {
    std::fputc('\n', out_);
    std::fflush(out_);
  }
  line_open_ = false;
}

}  // namespace longnet::tools
