#include "models/summary.h"

#include <algorithm>
#include <cstdio>
#include <vector>

namespace longnet {
namespace {

int depth_of(const std::string& name) {
  return name.empty() ? 0 : 1 + static_cast<int>(std::count(name.begin(), name.end(), '.'));
}

struct Row {
  std::string name, type, shapes, count;
};

std::string with_commas(int64_t n) {
  const std::string digits = std::to_string(n);
  std::string s;
  for (size_t i = 0; i < digits.size(); ++i) {
    const size_t left = digits.size() - i;
    if (i > 0 && digits[i - 1] != '-' && left % 3 == 0) s += ',';
    s += digits[i];
  }
  return s;
}

}  // namespace

std::string human_count(int64_t n) {
  const double v = static_cast<double>(n);
  char buf[32];
  if (v >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.2fB", v / 1e9);
  } else if (v >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  } else if (v >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1fK", v / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  }
  return buf;
}

std::string model_summary(const Module& model, const SummaryOptions& o) {
  std::vector<Row> rows{{"module", "type", "parameters", "count"}};
  for (const auto& [name, m] : model.named_modules()) {
    const int depth = depth_of(name);
    const bool aggregate = o.max_depth >= 0 && depth == o.max_depth;
    if (o.max_depth >= 0 && depth > o.max_depth) continue;
    std::string shapes;
    int64_t own = 0;
    for (const auto& [pname, p] : m->named_parameters()) {
      if (pname.find('.') != std::string::npos) continue;  // a submodule's
      shapes += (shapes.empty() ? "" : " ") + pname + shape_str(p.shape());
      own += p.numel();
    }
    const int64_t count = aggregate ? m->parameter_count() : own;
    if (count == 0 && !aggregate) continue;
    if (aggregate && count != own) shapes = std::to_string(m->named_parameters().size()) + " tensors";
    rows.push_back({name.empty() ? "(model)" : name, m->type_name(), shapes, with_commas(count)});
  }
  size_t w[4] = {0, 0, 0, 0};
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], r.type.size());
    w[2] = std::max(w[2], r.shapes.size());
    w[3] = std::max(w[3], r.count.size());
  }
  const auto pad = [](const std::string& s, size_t width, bool right) {
    const std::string fill(width - s.size(), ' ');
    return right ? fill + s : s + fill;
  };
  std::string out;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    out += pad(r.name, w[0], false) + "  " + pad(r.type, w[1], false) + "  " + pad(r.shapes, w[2], false) + "  " +
           pad(r.count, w[3], true) + "\n";
    if (i == 0) out += std::string(w[0] + w[1] + w[2] + w[3] + 6, '-') + "\n";
  }
  const int64_t total = model.parameter_count();
  char buf[128];
  std::snprintf(buf, sizeof buf, "%.1f MiB in f32", static_cast<double>(total) * 4.0 / (1024.0 * 1024.0));
  out += "total: " + with_commas(total) + " parameters (" + human_count(total) + ", " + buf + ")\n";
  if (o.config != nullptr) {
    const int64_t analytic = analytic_parameter_count(*o.config);
    out += "analytic count for config '" + o.config->name + "': " + with_commas(analytic) +
           (analytic == total ? " (equal)" : " (differs by " + with_commas(total - analytic) + ")") + "\n";
  }
  return out;
}

}  // namespace longnet
