// `longnet report RUN_DIR`: the run's metrics as one self-contained HTML page.
#include <iostream>
#include <memory>
#include <string>

#include "tools/longnet/commands.h"
#include "tools/longnet/metrics_report.h"
#include "tools/longnet/registry.h"

namespace longnet::tools {

void register_report(CLI::App& app) {
  struct Options {
    std::string run_dir;
    std::string out;
  };
  auto opt = std::make_shared<Options>();
  CLI::App* sub = app.add_subcommand("report", "Write RUN_DIR/report.html: curves of loss, lr, grad norm, tokens/s");
  sub->add_option("run_dir", opt->run_dir, "Run directory (holds metrics.jsonl)")->required();
  sub->add_option("--out", opt->out, "Output file (default: RUN_DIR/report.html)");
  on_run(sub, [opt] {
    std::cout << write_report(opt->run_dir, opt->out).string() << "\n";
    return 0;
  });
}

}  // namespace longnet::tools
