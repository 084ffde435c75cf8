#include "tools/longnet/metrics_report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "framework/core/error.h"

namespace longnet::tools {
namespace {

struct Series {
  std::string name;
  std::string color;
  std::vector<std::pair<double, double>> points;  // (step, value), finite only
  bool markers = false;
};

std::string html_escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string num(double v, const char* fmt = "%.4g") {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

// Tick positions at 1, 2 or 5 times a power of ten, about `target` of them across [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int target = 5) {
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (raw <= step) break;
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

// Every k-th point (and the last), so that a long run does not write tens of thousands of points.
std::vector<std::pair<double, double>> thin(const std::vector<std::pair<double, double>>& pts, size_t max_points) {
  if (pts.size() <= max_points) return pts;
  const size_t k = (pts.size() + max_points - 1) / max_points;
  std::vector<std::pair<double, double>> out;
  for (size_t i = 0; i < pts.size(); i += k) out.push_back(pts[i]);
  if (out.back() != pts.back()) out.push_back(pts.back());
  return out;
}

std::string svg_chart(const std::string& title, const std::vector<Series>& series) {
  constexpr double W = 720, H = 300, L = 72, R = 16, T = 34, B = 40;
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " << W << " " << H << "\" width=\"" << W
    << "\" height=\"" << H << "\" role=\"img\" aria-label=\"" << html_escape(title) << "\">\n";
  s << "<text x=\"" << L << "\" y=\"20\" class=\"title\">" << html_escape(title) << "</text>\n";
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const Series& se : series) {
    for (const auto& [x, y] : se.points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  }
  if (!std::isfinite(x0)) {
    s << "<text x=\"" << W / 2 << "\" y=\"" << H / 2 << "\" text-anchor=\"middle\" class=\"empty\">no data</text>\n</svg>\n";
    return s.str();
  }
  if (x1 == x0) x0 -= 1, x1 += 1;
  if (y1 == y0) {
    const double pad = y0 == 0 ? 1.0 : std::abs(y0) * 0.1;
    y0 -= pad, y1 += pad;
  } else {
    const double pad = (y1 - y0) * 0.05;
    y0 -= pad, y1 += pad;
  }
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  s << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
    << "\" fill=\"none\" stroke=\"#bbb\"/>\n";
  for (const double t : nice_ticks(y0, y1)) {
    s << "<line x1=\"" << L << "\" x2=\"" << W - R << "\" y1=\"" << py(t) << "\" y2=\"" << py(t) << "\" stroke=\"#eee\"/>"
      << "<text x=\"" << L - 6 << "\" y=\"" << py(t) + 4 << "\" text-anchor=\"end\">" << num(t) << "</text>\n";
  }
  for (const double t : nice_ticks(x0, x1)) {
    s << "<line x1=\"" << px(t) << "\" x2=\"" << px(t) << "\" y1=\"" << T << "\" y2=\"" << H - B << "\" stroke=\"#eee\"/>"
      << "<text x=\"" << px(t) << "\" y=\"" << H - B + 16 << "\" text-anchor=\"middle\">" << num(t, "%.0f") << "</text>\n";
  }
  s << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 6 << "\" text-anchor=\"middle\">step</text>\n";
  double legend_x = W - R - 8;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    const Series& se = *it;
    if (se.points.empty()) continue;
    s << "<polyline fill=\"none\" stroke=\"" << se.color << "\" stroke-width=\"1.6\" class=\"series\" data-name=\""
      << html_escape(se.name) << "\" points=\"";
    for (const auto& [x, y] : thin(se.points, 2000)) s << num(px(x), "%.1f") << "," << num(py(y), "%.1f") << " ";
    s << "\"/>\n";
    if (se.markers) {
      for (const auto& [x, y] : thin(se.points, 200)) {
        s << "<circle cx=\"" << num(px(x), "%.1f") << "\" cy=\"" << num(py(y), "%.1f") << "\" r=\"2.5\" fill=\"" << se.color
          << "\"><title>" << html_escape(se.name) << " step " << num(x, "%.0f") << ": " << num(y) << "</title></circle>\n";
      }
    }
    s << "<text x=\"" << legend_x << "\" y=\"20\" text-anchor=\"end\" fill=\"" << se.color << "\">" << html_escape(se.name)
      << " (last " << num(se.points.back().second) << ")</text>\n";
    legend_x -= 190;
  }
  s << "</svg>\n";
  return s.str();
}

// The metric names of the records: the four main ones first, then others as they appear.
std::vector<std::string> metric_names(const std::vector<MetricsRecord>& records) {
  std::vector<std::string> names{"loss", "lr", "grad_norm", "tokens_per_s"};
  for (const MetricsRecord& r : records) {
    for (const auto& [k, v] : r.values) {
      if (std::find(names.begin(), names.end(), k) == names.end()) names.push_back(k);
    }
  }
  return names;
}

Series series_of(const std::vector<MetricsRecord>& records, const std::string& split, const std::string& metric,
                 const std::string& color, bool markers) {
  Series s{split, color, {}, markers};
  for (const MetricsRecord& r : records) {
    if (r.split != split) continue;
    if (const auto v = r.get(metric); v && std::isfinite(*v)) s.points.emplace_back(static_cast<double>(r.step), *v);
  }
  return s;
}

const char* kStyle = R"(body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg{background:#fff;border:1px solid #ddd;border-radius:4px;font-size:11px}
svg .title{font-size:14px;font-weight:600}
svg text{fill:#444}svg .empty{fill:#999;font-size:14px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:4px 10px;text-align:left}
pre{background:#f7f7f7;padding:12px;border-radius:4px;overflow:auto;font-size:12px})";

}  // namespace

std::string render_report(const std::vector<MetricsRecord>& records, const std::string& title,
                          const std::string& config_text) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" << html_escape(title)
    << "</title>\n<style>" << kStyle << "</style>\n</head>\n<body>\n<h1>" << html_escape(title) << "</h1>\n";

  // Summary.
  std::map<std::string, int64_t> counts;
  int64_t last_step = 0;
  double t_first = INFINITY, t_last = -INFINITY;
  std::optional<std::pair<double, int64_t>> best_valid;
  std::optional<double> last_train_loss;
  for (const MetricsRecord& r : records) {
    ++counts[r.split];
    last_step = std::max(last_step, r.step);
    if (r.time > 0) t_first = std::min(t_first, r.time), t_last = std::max(t_last, r.time);
    const auto loss = r.get("loss");
    if (r.split == "train" && loss && std::isfinite(*loss)) last_train_loss = *loss;
    if (r.split == "valid" && loss && std::isfinite(*loss) && (!best_valid || *loss < best_valid->first)) {
      best_valid = {{*loss, r.step}};
    }
  }
  h << "<table>\n<tr><th>last step</th><td>" << last_step << "</td></tr>\n";
  for (const auto& [split, n] : counts) h << "<tr><th>" << html_escape(split) << " records</th><td>" << n << "</td></tr>\n";
  if (last_train_loss) h << "<tr><th>last train loss</th><td>" << num(*last_train_loss) << "</td></tr>\n";
  if (best_valid) {
    h << "<tr><th>best valid loss</th><td>" << num(best_valid->first) << " (step " << best_valid->second << ")</td></tr>\n";
  }
  if (t_last > t_first) h << "<tr><th>wall time</th><td>" << format_duration(t_last - t_first) << "</td></tr>\n";
  h << "</table>\n";

  // Curves.
  h << "<h2>Curves</h2>\n<div class=\"charts\">\n";
  for (const std::string& metric : metric_names(records)) {
    std::vector<Series> series{series_of(records, "train", metric, "#1f77b4", false),
                               series_of(records, "valid", metric, "#ff7f0e", true)};
    // Splits other than train and valid (a test set, say) get their own colour.
    std::vector<std::string> others;
    for (const MetricsRecord& r : records) {
      if (r.split != "train" && r.split != "valid" && std::find(others.begin(), others.end(), r.split) == others.end()) {
        others.push_back(r.split);
      }
    }
    for (const std::string& o : others) series.push_back(series_of(records, o, metric, "#2ca02c", true));
    h << svg_chart(metric, series);
  }
  h << "</div>\n";
  if (!config_text.empty()) h << "<h2>Config</h2>\n<pre>" << html_escape(config_text) << "</pre>\n";
  h << "</body>\n</html>\n";
  return h.str();
}

std::filesystem::path write_report(const std::filesystem::path& run_dir, std::filesystem::path out) {
  const std::filesystem::path metrics = run_dir / "metrics.jsonl";
  LN_CHECK(std::filesystem::exists(metrics), "[report] no metrics.jsonl in '", run_dir.string(), "'");
  std::string config;
  if (std::ifstream in(run_dir / "config.toml", std::ios::binary); in.good()) {
    std::ostringstream s;
    s << in.rdbuf();
    config = s.str();
  }
  if (out.empty()) out = run_dir / "report.html";
  const std::string html =
      render_report(read_metrics_jsonl(metrics), "LongNet run " + std::filesystem::absolute(run_dir).filename().string(), config);
  std::ofstream f(out, std::ios::binary | std::ios::trunc);
  LN_CHECK(f.good(), "[report] cannot write '", out.string(), "'");
  f << html;
  f.flush();
  LN_CHECK(f.good(), "[report] error writing '", out.string(), "'");
  return out;
}

}  // namespace longnet::tools
