// `longnet train` and `longnet finetune`: run the trainer on a run config.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "tools/longnet/commands.h"
#include "tools/longnet/registry.h"
#include "tools/longnet/trainer.h"

namespace longnet::tools {
namespace {

struct TrainCli {
  std::shared_ptr<ConfigOptions> config;
  std::string from;  // finetune only
  bool quiet_config = false;
};

// Mean loss of the last `n` finite updates of this call.
double recent_loss(const TrainResult& r, size_t n) {
  double sum = 0.0;
  size_t count = 0;
  for (auto it = r.losses.rbegin(); it != r.losses.rend() && count < n; ++it) {
    if (!std::isfinite(it->second)) continue;
    sum += it->second;
    ++count;
  }
  return count > 0 ? sum / static_cast<double>(count) : NAN;
}

int run_train(const CLI::App& sub, const TrainCli& cli, bool finetune) {
  RunConfig config = cli.config->resolve(sub);
  if (finetune) {
    if (!cli.from.empty()) config.training.finetune_from = cli.from;
    if (config.training.finetune_from.empty()) {
      std::cerr << "error: finetune needs the model to start from: --from RUN_DIR|CHECKPOINT or training.finetune_from\n";
      return 2;
    }
  }
  TrainOptions options;
  options.print_config = !cli.quiet_config;
  const TrainResult r = train(config, options);
  if (r.interrupted) {
    std::printf("[train] stopped at step %lld of %lld; checkpoint %s. Run the same command to resume.\n",
                static_cast<long long>(r.end_step), static_cast<long long>(config.training.steps),
                r.last_checkpoint.string().c_str());
    return 0;
  }
  std::printf("[train] done: %lld steps", static_cast<long long>(r.end_step));
  if (!r.losses.empty()) {
    std::printf(", first loss %.4f, final loss %.4f (mean of the last 10 updates)", r.losses.front().second,
                recent_loss(r, 10));
  }
  if (r.valid_loss) std::printf(", valid loss %.4f (perplexity %.2f)", *r.valid_loss, std::exp(*r.valid_loss));
  if (r.skipped_steps > 0) std::printf(", %lld non-finite updates skipped", static_cast<long long>(r.skipped_steps));
  std::printf("\n[train] checkpoint %s\n", r.last_checkpoint.string().c_str());
  return 0;
}

CLI::App* add_train_command(CLI::App& app, const char* name, const char* help, bool finetune) {
  auto cli = std::make_shared<TrainCli>();
  CLI::App* sub = app.add_subcommand(name, help);
  cli->config = add_config_options(sub);
  if (finetune) {
    sub->add_option("--from", cli->from,
                    "Run directory (its newest valid checkpoint) or step-N/ checkpoint whose weights start the run "
                    "(sets training.finetune_from)");
  }
  sub->add_flag("--quiet-config", cli->quiet_config, "Do not print the effective config at the start");
  sub->footer(
      "Any config key can be overridden: --training.steps 50 --optimizer.lr 3e-4 (see `longnet config --keys`).\n"
      "The run directory is checkpoint.dir; a run with a valid checkpoint there resumes from it. SIGINT or SIGTERM\n"
      "saves a checkpoint and stops; running the same command again continues.");
  on_run(sub, [sub, cli, finetune] { return run_train(*sub, *cli, finetune); });
  return sub;
}

}  // namespace

void register_train(CLI::App& app) {
  add_train_command(app, "train", "Train a model from a run config (resumes its run directory's newest checkpoint)",
                    false);
  add_train_command(app, "finetune",
                    "Train from a trained model's weights with a new config (longer context, new data, new schedule, "
                    "frozen layers)",
                    true);
}

}  // namespace longnet::tools
