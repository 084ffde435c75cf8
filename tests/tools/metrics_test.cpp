// Metrics: JSONL round trips (NaN as null, appending, a torn last line), the logger's two outputs,
// the console line's text and its terminal / plain modes, and the HTML report (one curve per
// metric with every point, validation markers, escaping, nothing loaded from outside).
#include "tools/longnet/metrics.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "framework/core/error.h"
#include "tools/longnet/metrics_report.h"

namespace longnet::tools {
namespace {

namespace fs = std::filesystem;

class Metrics : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("longnet-metrics-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
};

MetricsRecord rec(int64_t step, const std::string& split, std::vector<std::pair<std::string, double>> values) {
  MetricsRecord r;
  r.step = step;
  r.split = split;
  r.time = 1700000000.0 + step;
  r.values = std::move(values);
  return r;
}

TEST_F(Metrics, JsonlRoundTripAppendAndNaN) {
  const fs::path path = dir_ / "sub" / "metrics.jsonl";
  {
    JsonlWriter w(path);
    w.write(rec(10, "train", {{"loss", 3.25}, {"lr", 6e-4}, {"grad_norm", std::numeric_limits<double>::quiet_NaN()}}));
  }
  {
    JsonlWriter w(path);  // a resumed run appends
    w.write(rec(20, "valid", {{"loss", 2.5}}));
  }
  // The file is plain JSON lines, fields in order, NaN as null.
  EXPECT_EQ(slurp(path),
            "{\"step\":10,\"split\":\"train\",\"time\":1700000010.0,\"loss\":3.25,\"lr\":0.0006,\"grad_norm\":null}\n"
            "{\"step\":20,\"split\":\"valid\",\"time\":1700000020.0,\"loss\":2.5}\n");
  const auto back = read_metrics_jsonl(path);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].step, 10);
  EXPECT_EQ(back[0].split, "train");
  EXPECT_EQ(back[0].values.size(), 3u);
  EXPECT_EQ(back[0].get("loss"), 3.25);
  EXPECT_TRUE(std::isnan(*back[0].get("grad_norm")));
  EXPECT_FALSE(back[0].get("tokens_per_s").has_value());
  EXPECT_EQ(back[1].split, "valid");
  EXPECT_EQ(back[1].time, 1700000020.0);
  JsonlWriter w(path);
  EXPECT_THROW(w.write(rec(1, "train", {{"step", 1.0}})), Error);
}

TEST_F(Metrics, JsonlResumeDropsTheStepsItRepeats) {
  const fs::path path = dir_ / "metrics.jsonl";
  {
    JsonlWriter w(path);
    for (int64_t s = 1; s <= 4; ++s) w.write(rec(s, "train", {{"loss", 10.0 - static_cast<double>(s)}}));
    w.write(rec(4, "valid", {{"loss", 5.0}}));
  }
  {
    std::ofstream torn(path, std::ios::binary | std::ios::app);
    torn << "{\"step\":5,\"spl";  // a kill mid-write
  }
  JsonlWriter w(path, 2);  // resumed from step 2: steps 3 and 4 are repeated
  w.write(rec(3, "train", {{"loss", 1.5}}));
  const auto back = read_metrics_jsonl(path);
  ASSERT_EQ(back.size(), 3u);
  EXPECT_EQ(back[0].step, 1);
  EXPECT_EQ(back[1].step, 2);
  EXPECT_EQ(back[2].step, 3);
  EXPECT_EQ(back[2].get("loss"), 1.5);
  EXPECT_FALSE(fs::exists(dir_ / "metrics.jsonl.tmp"));
}

TEST_F(Metrics, TornLastLineIsSkippedOtherBadLinesAreNot) {
  const fs::path path = dir_ / "m.jsonl";
  std::ofstream(path) << "{\"step\":1,\"loss\":2}\n{\"step\":2,\"lo";
  const auto recs = read_metrics_jsonl(path);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].split, "train");  // the default split
  std::ofstream(path) << "{\"step\":1}\nnot json\n{\"step\":3}\n";
  try {
    read_metrics_jsonl(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m.jsonl:2: not JSON"), std::string::npos) << e.what();
  }
  std::ofstream(path) << "{\"loss\":1}\n";
  EXPECT_THROW(read_metrics_jsonl(path), Error);
}

TEST_F(Metrics, LoggerWritesJsonlAndTensorBoard) {
  {
    MetricsLogger log(dir_, true, true);
    log.log(rec(5, "train", {{"loss", 1.0}, {"lr", 0.1}}));
  }
  EXPECT_EQ(read_metrics_jsonl(dir_ / "metrics.jsonl").size(), 1u);
  int events = 0;
  for (const auto& e : fs::directory_iterator(dir_ / "tensorboard")) {
    events += e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
    EXPECT_GT(fs::file_size(e.path()), 60u);  // the version event and one with two scalars
  }
  EXPECT_EQ(events, 1);
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  MetricsLogger none(dir_, false, false);
  none.log(rec(1, "train", {{"loss", 1.0}}));
  EXPECT_TRUE(fs::is_empty(dir_));
}

TEST(MetricsFormat, ProgressLine) {
  Progress p;
  p.step = 120;
  p.total_steps = 300;
  EXPECT_EQ(format_progress(p), "step 120/300 (40%)");
  p.loss = 3.21404;
  p.lr = 6e-4;
  p.grad_norm = 0.8234;
  p.tokens_per_s = 12345;
  p.mfu = 0.3123;
  p.memory_bytes = int64_t{1288490189};  // 1.2 GiB
  p.eta_seconds = 151;
  EXPECT_EQ(format_progress(p),
            "step 120/300 (40%) | loss 3.2140 | lr 6.00e-04 | gnorm 0.823 | 12.3k tok/s | MFU 31.2% | mem 1.20 GiB | "
            "ETA 2m31s");
  EXPECT_EQ(format_duration(45), "45s");
  EXPECT_EQ(format_duration(3 * 3600 + 4 * 60 + 10), "3h04m");
  EXPECT_EQ(format_duration(2 * 86400 + 5 * 3600), "2d05h");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "?");
}

std::string run_console(bool tty) {
  std::FILE* f = std::tmpfile();
  {
    ConsoleLine line(f, tty);
    Progress p;
    p.total_steps = 10;
    p.step = 1;
    line.update(p);
    p.step = 2;
    line.update(p);
    line.message("eval loss 2.0");
    p.step = 3;
    p.eta_seconds = 7;
    line.update(p);
  }
  std::rewind(f);
  std::string out;
  for (int c; (c = std::fgetc(f)) != EOF;) out += static_cast<char>(c);
  std::fclose(f);
  return out;
}

TEST(MetricsFormat, ConsoleLineModes) {
  // Plain output: one line per update, the message between them; ETA once a rate is known.
  const std::string plain = run_console(false);
  EXPECT_EQ(plain.find('\r'), std::string::npos);
  EXPECT_NE(plain.find("step 1/10 (10%)\n"), std::string::npos) << plain;
  EXPECT_NE(plain.find("eval loss 2.0\n"), std::string::npos);
  EXPECT_NE(plain.find("step 2/10 (20%) | ETA "), std::string::npos) << plain;
  EXPECT_NE(plain.find("step 3/10 (30%) | ETA 7s\n"), std::string::npos) << plain;
  // Terminal: each update returns to the line start and clears the rest; one newline at the end
  // besides the message's.
  const std::string tty = run_console(true);
  EXPECT_EQ(tty.rfind("\rstep 1/10 (10%)\033[K", 0), 0u) << tty;
  EXPECT_NE(tty.find("\r\033[Keval loss 2.0\n"), std::string::npos);
  EXPECT_EQ(std::count(tty.begin(), tty.end(), '\n'), 2);
  EXPECT_EQ(tty.back(), '\n');
}

// Points of the polyline of series `name` in the chart titled `title`.
std::vector<std::pair<double, double>> polyline(const std::string& html, const std::string& title, const std::string& name) {
  const size_t chart = html.find("aria-label=\"" + title + "\"");
  const size_t end = html.find("</svg>", chart);
  const size_t line = html.find("data-name=\"" + name + "\" points=\"", chart);
  std::vector<std::pair<double, double>> out;
  if (chart == std::string::npos || line == std::string::npos || line > end) return out;
  const size_t start = html.find("points=\"", line) + 8;
  std::istringstream pts(html.substr(start, html.find('"', start) - start));
  for (std::string p; pts >> p;) {
    const size_t comma = p.find(',');
    out.emplace_back(std::stod(p.substr(0, comma)), std::stod(p.substr(comma + 1)));
  }
  return out;
}

TEST(MetricsReport, CurvesForEveryMetricAndSplit) {
  std::vector<MetricsRecord> recs;
  for (int s = 10; s <= 100; s += 10) {
    recs.push_back(rec(s, "train", {{"loss", 5.0 - s * 0.03}, {"lr", 1e-3}, {"grad_norm", 1.0 / s},
                                    {"tokens_per_s", 1000.0 + s}, {"ppl", std::exp(5.0 - s * 0.03)}}));
    if (s % 50 == 0) recs.push_back(rec(s, "valid", {{"loss", 4.9 - s * 0.03}}));
  }
  recs[3].values[0].second = std::numeric_limits<double>::quiet_NaN();  // a bad step is left out
  const std::string html = render_report(recs, "run <demo>", "[model]\nname = \"<b>\"\n");
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("<title>run &lt;demo&gt;</title>"), std::string::npos);
  EXPECT_NE(html.find("name = &quot;&lt;b&gt;&quot;"), std::string::npos);
  // Self-contained: no scripts, no links, no external resources.
  for (const char* banned : {"<script", "href=", "src=", "url("}) EXPECT_EQ(html.find(banned), std::string::npos) << banned;
  // One chart per metric, in order, the extra one (ppl) after the four main ones.
  std::vector<size_t> pos;
  for (const char* t : {"loss", "lr", "grad_norm", "tokens_per_s", "ppl"}) {
    pos.push_back(html.find(std::string("aria-label=\"") + t + "\""));
    EXPECT_NE(pos.back(), std::string::npos) << t;
  }
  EXPECT_TRUE(std::is_sorted(pos.begin(), pos.end()));
  // The train loss curve has every finite point, left to right; the falling loss goes down the
  // chart (SVG y grows downwards).
  const auto train = polyline(html, "loss", "train");
  ASSERT_EQ(train.size(), 9u);
  EXPECT_DOUBLE_EQ(train.front().first, 72.0);  // first step at the left edge of the plot
  EXPECT_DOUBLE_EQ(train.back().first, 704.0);  // last step at the right edge
  for (size_t i = 1; i < train.size(); ++i) {
    EXPECT_GT(train[i].first, train[i - 1].first);
    EXPECT_GT(train[i].second, train[i - 1].second);
  }
  EXPECT_EQ(polyline(html, "loss", "valid").size(), 2u);
  EXPECT_TRUE(polyline(html, "lr", "valid").empty());
  // Validation points are marked, with their values.
  EXPECT_NE(html.find("<title>valid step 100: 1.9</title>"), std::string::npos);
  // The summary names the best validation loss.
  EXPECT_NE(html.find("<tr><th>best valid loss</th><td>1.9 (step 100)</td></tr>"), std::string::npos);
  // A metric without data still gets a frame saying so.
  EXPECT_NE(render_report({}, "empty", "").find("no data"), std::string::npos);
}

TEST_F(Metrics, WriteReportFromARunDirectory) {
  EXPECT_THROW(write_report(dir_), Error);
  {
    MetricsLogger log(dir_, true, false);
    for (int s = 1; s <= 3; ++s) log.log(rec(s, "train", {{"loss", 4.0 - s}}));
  }
  std::ofstream(dir_ / "config.toml") << "[training]\nsteps = 3\n";
  const fs::path out = write_report(dir_);
  EXPECT_EQ(out, dir_ / "report.html");
  const std::string html = slurp(out);
  EXPECT_EQ(polyline(html, "loss", "train").size(), 3u);
  EXPECT_NE(html.find("steps = 3"), std::string::npos);
  EXPECT_EQ(write_report(dir_, dir_ / "other.html"), dir_ / "other.html");
  EXPECT_TRUE(fs::exists(dir_ / "other.html"));
}

}  // namespace
}  // namespace longnet::tools
