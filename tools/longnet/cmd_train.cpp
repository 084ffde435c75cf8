// `longnet train` and `longnet finetune`: run the trainer on a run config, as one process, as one
// rank of a launcher's run (mpirun, torchrun-style variables, Slurm), or as the spawner of
// --nproc-per-node ranks on this node.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "framework/core/error.h"
#include "framework/dist/launch.h"
#include "framework/dist/nccl.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/rank_launch.h"
#include "tools/longnet/registry.h"
#include "tools/longnet/trainer.h"
#include "tools/longnet/trainer_setup.h"

namespace longnet::tools {
namespace {

constexpr const char* kNprocFlag = "--nproc-per-node";

struct TrainCli {
  std::shared_ptr<ConfigOptions> config;
  std::string from;  // finetune only
  bool quiet_config = false;
  int64_t nproc_per_node = 0;  // 0: parallelism.nproc_per_node decides
};

// --nproc-per-node N: this process starts N ranks of itself on this node and waits for them.
int spawn_ranks(int64_t nproc, const dist::LaunchInfo& launch) {
  LN_CHECK(launch.world_size == 1, "[train] parallelism.nproc_per_node = ", nproc, " starts the ranks itself, but ",
           "this process is already rank ", launch.rank, " of ", launch.world_size, " (", launch.source,
           "): use either a launcher or --nproc-per-node");
  LN_CHECK(dist::nccl_available(), "[train] --nproc-per-node ", nproc, " starts one process per GPU, and this build "
           "has no NCCL backend (configure with -DLONGNET_CUDA=ON on a machine with NCCL); the in-process backend "
           "is for tests only");
  LN_CHECK(nproc <= gpu_count(), "[train] --nproc-per-node ", nproc, " needs a GPU per process; ", gpu_count(),
           " are visible");
  std::vector<std::string> argv = own_command_line(kNprocFlag);
  argv.push_back("--parallelism.nproc_per_node=1");
  return dist::spawn_local(static_cast<int>(nproc), argv, launch.master_port);
}

// The NCCL world of a rank started by a launcher. A collective that outlives
// parallelism.timeout_s (a dead or stuck peer) ends this process, so that no rank waits forever.
std::shared_ptr<dist::Communicator> make_world(const dist::LaunchInfo& launch, int64_t timeout_s) {
  LN_CHECK(dist::nccl_available(), "[train] started as rank ", launch.rank, " of ", launch.world_size, " (",
           launch.source, " variables), and this build has no NCCL backend: distributed training needs a GPU build "
           "with NCCL (configure with -DLONGNET_CUDA=ON); the in-process backend is for tests only");
  return make_rank_world(launch, std::chrono::seconds(timeout_s));
}

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

// One rank's part of run_train (the whole run with one process).
int train_as_rank(const RunConfig& config, const TrainCli& cli, const dist::LaunchInfo& launch) {
  TrainOptions options;
  options.print_config = !cli.quiet_config;
  std::shared_ptr<dist::Communicator> world;
  if (launch.world_size > 1) {
    world = make_world(launch, config.parallelism.timeout_s);
    options.world = world.get();
    options.local_rank = launch.local_rank;
  }
  const TrainResult r = train(config, options);
  if (launch.rank != 0) return 0;  // rank 0 speaks for the run
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

int run_train(const CLI::App& sub, const TrainCli& cli, bool finetune) {
  RunConfig config = cli.config->resolve(sub);
  if (finetune) {
    if (!cli.from.empty()) config.training.finetune_from = cli.from;
    if (config.training.finetune_from.empty()) {
      std::cerr << "error: finetune needs the model to start from: --from RUN_DIR|CHECKPOINT or training.finetune_from\n";
      return 2;
    }
  }
  if (cli.nproc_per_node > 0) config.parallelism.nproc_per_node = cli.nproc_per_node;
  const dist::LaunchInfo launch = dist::launch_info_from_env();
  if (config.parallelism.nproc_per_node > 1) return spawn_ranks(config.parallelism.nproc_per_node, launch);
  return run_rank(launch.rank, launch.world_size, [&] { return train_as_rank(config, cli, launch); });
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
  sub->add_option(kNprocFlag, cli->nproc_per_node,
                  "Start N ranks of this command on this node, one GPU each, and wait for them (sets "
                  "parallelism.nproc_per_node)")
      ->check(CLI::Range(1, 1 << 16));
  sub->footer(
      "Any config key can be overridden: --training.steps 50 --optimizer.lr 3e-4 (see `longnet config --keys`).\n"
      "The run directory is checkpoint.dir; a run with a valid checkpoint there resumes from it. SIGINT or SIGTERM\n"
      "saves a checkpoint and stops; running the same command again continues.\n"
      "Several GPUs: --nproc-per-node N on one node, or under mpirun -np N (or torchrun-style RANK/WORLD_SIZE\n"
      "variables, or Slurm); parallelism.data_parallel x sequence_parallel must equal the number of ranks.");
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
