// Distributed training through train() on in-process ranks (threads of this process, on the CPU),
// against the same runs in one process: data parallelism (plain and ZeRO-1, with gradient
// accumulation), sequence parallelism with each algorithm and on a 2 x 2 mesh, resuming across
// world sizes after a signal that one rank received, losses weighted by each rank's targets,
// agreement on non-finite steps, files and console on rank 0 only, and clear errors for bad
// degrees and for launching several processes on a build without NCCL.
#include "tools/longnet/trainer.h"

#include <omp.h>
#include <signal.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/token_store.h"
#include "framework/core/error.h"
#include "framework/dist/inprocess.h"
#include "framework/dist/nccl.h"
#include "framework/io/safetensors.h"
#include "tests/support/gradcheck.h"
#include "tests/support/program.h"
#include "tests/tools/trainer_test_util.h"
#include "tools/longnet/metrics.h"
#include "tools/longnet/trainer_dist.h"
#include "tools/longnet/trainer_setup.h"

namespace longnet::tools {
namespace {

namespace fs = std::filesystem;
using testing::quiet;
using testing::ScratchDir;
using testing::tiny_run_config;
using testing::write_pattern_store;
using Losses = std::vector<std::pair<int64_t, double>>;

// The tiny run without dropout: ranks draw masks of their own, so only dropout-free runs can
// equal one process. Two micro-batches of 2 sequences of 16 tokens per update.
RunConfig exact_config(const std::string& store, const fs::path& run, int64_t steps) {
  RunConfig c = tiny_run_config(store, run, steps);
  c.model.dropout = 0.0;
  return c;
}

// One OpenMP thread per kernel for a test's scope: the in-process ranks are the parallelism, and
// teams of threads per rank (or idle teams of the reference run) oversubscribe the cores.
class OneKernelThread {
 public:
  OneKernelThread() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~OneKernelThread() { omp_set_num_threads(saved_); }
  OneKernelThread(const OneKernelThread&) = delete;
  OneKernelThread& operator=(const OneKernelThread&) = delete;

 private:
  int saved_;
};

// train() on `ranks` in-process ranks, rank r with config_of(r) and quiet options that adjust(r,
// options) may change; each rank's result.
std::vector<TrainResult> train_on_ranks(int ranks, const std::function<RunConfig(int)>& config_of,
                                        const std::function<void(int, TrainOptions&)>& adjust = {}) {
  std::vector<TrainResult> results(ranks);
  dist::run_in_process(ranks, [&](dist::Communicator& world) {
    const OneKernelThread one_thread;
    TrainOptions o = quiet();
    o.world = &world;
    if (adjust) adjust(world.rank(), o);
    results[world.rank()] = train(config_of(world.rank()), o);
  });
  return results;
}

std::vector<TrainResult> train_on_ranks(int ranks, const RunConfig& config) {
  return train_on_ranks(ranks, [&](int) { return config; });
}

// Same steps, losses within a relative tolerance (the ranks add in another order than one process).
void expect_same_losses(const Losses& got, const Losses& want, double rtol = 1e-4) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_NEAR(got[i].second, want[i].second, rtol * std::abs(want[i].second)) << "step " << want[i].first;
  }
}

// The same tensor names in two safetensors files, values within tolerances.
void expect_close_tensors(const fs::path& got, const fs::path& want, double atol, double rtol) {
  const auto g = io::load_safetensors(got.string());
  const auto w = io::load_safetensors(want.string());
  ASSERT_EQ(g.size(), w.size()) << got;
  for (const auto& [name, t] : w) {
    ASSERT_TRUE(g.count(name)) << name << " missing from " << got;
    EXPECT_TRUE(longnet::testing::all_close(g.at(name), t, atol, rtol)) << name;
  }
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

Losses joined(Losses a, const Losses& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(DistributedTrainer, DataParallelAndZero1EqualOneProcess) {
  const OneKernelThread one_thread;
  ScratchDir dir("dtrain-dp");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  RunConfig one = exact_config(store, dir.path() / "one", 4);
  one.data.valid = store;
  one.training.eval_every = 2;
  one.training.eval_batches = 2;
  const TrainResult want = train(one, quiet());
  // Guards the equalities below against runs that learn nothing.
  ASSERT_LT(want.losses.back().second, want.losses.front().second - 0.1);
  ASSERT_TRUE(want.valid_loss.has_value());

  for (const bool zero1 : {false, true}) {
    SCOPED_TRACE(zero1 ? "ZeRO-1" : "plain");
    RunConfig c = one;
    c.checkpoint.dir = (dir.path() / (zero1 ? "zero1" : "dp")).string();
    c.parallelism.zero1 = zero1;
    c.parallelism.bucket_mb = 0.004;  // several buckets, most launched during backward
    // Recomputed blocks deliver their gradients from nested backwards: still one per parameter.
    c.model.checkpoint_activations = zero1;
    const std::vector<TrainResult> got = train_on_ranks(2, c);
    for (const TrainResult& r : got) {
      expect_same_losses(r.losses, want.losses);
      ASSERT_TRUE(r.valid_loss.has_value());
      EXPECT_NEAR(*r.valid_loss, *want.valid_loss, 1e-4 * *want.valid_loss);
    }
    EXPECT_EQ(got[0].last_checkpoint.filename(), "step-4");
    expect_close_tensors(got[0].last_checkpoint / kModelFile, want.last_checkpoint / kModelFile, 2e-5, 1e-4);
    // The checkpoint's optimizer state is one optimizer's over every parameter (gathered from
    // the owners under ZeRO-1), so that it loads at any world size.
    expect_close_tensors(got[0].last_checkpoint / "optimizer.safetensors",
                         want.last_checkpoint / "optimizer.safetensors", 1e-7, 1e-3);
    const nlohmann::json scalars = read_json(got[0].last_checkpoint / "optimizer.json");
    EXPECT_EQ(scalars.at("param_updates"), read_json(want.last_checkpoint / "optimizer.json").at("param_updates"));
    EXPECT_EQ(scalars.at("step"), 4);
  }
}

// (parallelism.sequence_algorithm, attention.kind, data-parallel and sequence-parallel degrees)
using SpCase = std::tuple<std::string, std::string, int, int>;

class DistributedTrainerSp : public ::testing::TestWithParam<SpCase> {};

TEST_P(DistributedTrainerSp, EqualsOneProcess) {
  const OneKernelThread one_thread;
  const auto [algorithm, kind, dp, sp] = GetParam();
  ScratchDir dir("dtrain-sp");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  // 16 tokens: over 2 ranks the 8-token segments stay local and the 16-token ones span ranks.
  RunConfig one = exact_config(store, dir.path() / "one", 3);
  one.attention.kind = kind;
  one.data.valid = store;
  one.training.eval_every = 3;
  one.training.eval_batches = 1;
  const TrainResult want = train(one, quiet());

  RunConfig c = one;
  c.checkpoint.dir = (dir.path() / "ranks").string();
  c.parallelism.sequence_parallel = sp;
  c.parallelism.sequence_algorithm = algorithm;
  const std::vector<TrainResult> got = train_on_ranks(dp * sp, c);
  for (const TrainResult& r : got) {
    expect_same_losses(r.losses, want.losses);
    ASSERT_TRUE(r.valid_loss.has_value());
    EXPECT_NEAR(*r.valid_loss, *want.valid_loss, 1e-4 * *want.valid_loss);
  }
  expect_close_tensors(got[0].last_checkpoint / kModelFile, want.last_checkpoint / kModelFile, 2e-5, 1e-4);
  // The checkpoint names the single-process core: it loads in one process.
  EXPECT_EQ(load_model(got[0].last_checkpoint, Device::cpu()).model_config.attention, kind);
}

INSTANTIATE_TEST_SUITE_P(Algorithms, DistributedTrainerSp,
                         ::testing::Values(SpCase{"dilated", "dilated", 1, 2}, SpCase{"ring", "dense", 1, 2},
                                           SpCase{"ring", "dense", 1, 4}, SpCase{"ulysses", "dense", 1, 2},
                                           SpCase{"dilated", "dilated", 2, 2}, SpCase{"dilated", "dilated", 2, 4},
                                           SpCase{"ring", "dense", 2, 4}));

TEST(DistributedTrainer, Zero1RunResumesInOneProcessAndBack) {
  const OneKernelThread one_thread;
  ScratchDir dir("dtrain-resume");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  const int64_t steps = 6;
  const RunConfig base = exact_config(store, dir.path() / "whole", steps);
  const TrainResult whole = train(base, quiet());

  // Two ranks with ZeRO-1; only rank 1 gets SIGINT, after step 3: both stop there, rank 0 saves.
  RunConfig zero = base;
  zero.checkpoint.dir = (dir.path() / "zero").string();
  zero.parallelism.zero1 = true;
  const auto first = train_on_ranks(
      2, [&](int) { return zero; },
      [](int rank, TrainOptions& o) {
        o.handle_signals = true;
        if (rank == 1) {
          o.on_step = [](int64_t step, double) {
            if (step == 3) ::raise(SIGINT);
          };
        }
      });
  for (const TrainResult& r : first) {
    EXPECT_TRUE(r.interrupted);
    EXPECT_EQ(r.end_step, 3);
  }
  EXPECT_EQ(first[0].last_checkpoint.filename(), "step-3");
  // One process without ZeRO-1 continues from it.
  RunConfig single = zero;
  single.parallelism.zero1 = false;
  const TrainResult second = train(single, quiet());
  EXPECT_EQ(second.start_step, 3);
  expect_same_losses(joined(first[0].losses, second.losses), whole.losses);

  // And back: one process stopped by a signal after step 2, continued by two ZeRO-1 ranks.
  RunConfig back = base;
  back.checkpoint.dir = (dir.path() / "back").string();
  TrainOptions interrupt = quiet();
  interrupt.handle_signals = true;
  interrupt.on_step = [](int64_t step, double) {
    if (step == 2) ::raise(SIGINT);
  };
  const TrainResult alone = train(back, interrupt);
  ASSERT_TRUE(alone.interrupted);
  back.parallelism.zero1 = true;
  const auto ranks = train_on_ranks(2, back);
  EXPECT_EQ(ranks[1].start_step, 2);
  expect_same_losses(joined(alone.losses, ranks[0].losses), whole.losses);
  expect_close_tensors(ranks[0].last_checkpoint / kModelFile, whole.last_checkpoint / kModelFile, 2e-5, 1e-4);
}

TEST(DistributedTrainer, RanksWeighTheirLossesByTheirTargets) {
  const OneKernelThread one_thread;
  ScratchDir dir("dtrain-weights");
  // 1 to 4 title tokens: padding (never a target) leaves each rank a different number of targets.
  const std::string store = testing::write_doc2text_store(dir.path() / "d2t.h5", [](int d) { return 1 + d % 4; });
  RunConfig one = exact_config(store, dir.path() / "one", 4);
  one.model.kind = "encoder_decoder";
  one.model.encoder_layers = 1;
  one.model.layers = 1;
  one.data.task = "doc2text";
  one.data.target_len = 7;
  one.data.valid = store;
  one.training.eval_every = 4;
  one.training.eval_batches = 2;
  const TrainResult want = train(one, quiet());
  RunConfig c = one;
  c.checkpoint.dir = (dir.path() / "ranks").string();
  const auto got = train_on_ranks(2, c);
  // A plain average of the ranks' means would give the targets of a short example more weight.
  expect_same_losses(got[0].losses, want.losses);
  EXPECT_NEAR(*got[0].valid_loss, *want.valid_loss, 1e-4 * *want.valid_loss);
}

TEST(DistributedTrainer, RanksAgreeOnNonFiniteSteps) {
  const OneKernelThread one_thread;
  ScratchDir dir("dtrain-nan");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  RunConfig c = exact_config(store, dir.path() / "run", 4);
  c.optimizer.lr = 1e30;
  c.optimizer.clip_grad_norm = 0.0;
  c.lr_scheduler.name = "constant";
  c.lr_scheduler.warmup_steps = 0;
  const TrainResult want = train(c, quiet());
  ASSERT_GT(want.skipped_steps, 0);
  c.checkpoint.dir = (dir.path() / "ranks").string();
  for (const TrainResult& r : train_on_ranks(2, c)) {
    EXPECT_EQ(r.skipped_steps, want.skipped_steps);
    ASSERT_EQ(r.losses.size(), want.losses.size());
    for (size_t i = 0; i < r.losses.size(); ++i) {
      EXPECT_EQ(std::isfinite(r.losses[i].second), std::isfinite(want.losses[i].second)) << "step " << i + 1;
    }
  }
}

// Everything a FILE* received.
std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  return out;
}

TEST(DistributedTrainer, OnlyRankZeroWritesAndPrints) {
  const OneKernelThread one_thread;
  ScratchDir dir("dtrain-files");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  RunConfig c = exact_config(store, dir.path() / "run", 2);
  c.checkpoint.every = 1;
  c.metrics.tensorboard = true;
  c.metrics.report = true;
  // Rank 1 is given a run directory of its own: nothing may appear there.
  const fs::path other = dir.path() / "rank1";
  std::FILE* console[2] = {std::tmpfile(), std::tmpfile()};
  ASSERT_TRUE(console[0] && console[1]);
  train_on_ranks(
      2,
      [&](int rank) {
        RunConfig x = c;
        if (rank == 1) x.checkpoint.dir = other.string();
        return x;
      },
      [&](int rank, TrainOptions& o) {
        o.console = console[rank];
        o.console_tty = false;
      });
  EXPECT_FALSE(fs::exists(other));
  for (const char* name : {"config.toml", "metrics.jsonl", "report.html", "tensorboard", "step-1", "step-2"}) {
    EXPECT_TRUE(fs::exists(dir.path() / "run" / name)) << name;
  }
  std::vector<int64_t> logged;
  for (const MetricsRecord& r : read_metrics_jsonl(dir.path() / "run" / "metrics.jsonl")) logged.push_back(r.step);
  EXPECT_EQ(logged, (std::vector<int64_t>{1, 2}));
  const std::string lead = contents(console[0]);
  EXPECT_NE(lead.find("# effective config"), std::string::npos) << lead;
  EXPECT_NE(lead.find("x 2 ranks (2 data-parallel x 1 sequence-parallel)"), std::string::npos) << lead;
  EXPECT_NE(lead.find("[train] saved"), std::string::npos) << lead;
  EXPECT_EQ(contents(console[1]), "");
  std::fclose(console[0]);
  std::fclose(console[1]);
}

TEST(DistributedTrainer, AValidationSetTooSmallForTheReplicasStopsTheRunBeforeItTrains) {
  const OneKernelThread one_thread;
  ScratchDir dir("dtrain-small-valid");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  RunConfig c = exact_config(store, dir.path() / "run", 4);
  c.data.valid = write_pattern_store(dir.path() / "valid.h5", 1, 17);  // one window of seq_len + 1
  c.training.eval_every = 2;
  std::vector<std::string> errors(2);
  dist::run_in_process(2, [&](dist::Communicator& world) {
    TrainOptions o = quiet();
    o.world = &world;
    errors[static_cast<size_t>(world.rank())] = longnet::testing::error_message([&] { train(c, o); });
  });
  for (const std::string& e : errors) {
    EXPECT_NE(e.find("data.valid holds 1 validation examples of this task, fewer than parallelism.data_parallel = 2"),
              std::string::npos)
        << e;
  }
  EXPECT_FALSE(fs::exists(dir.path() / "run" / "metrics.jsonl"));  // no step ran
}

TEST(DistributedTrainer, BadDegreesAreNamed) {
  const RunConfig base = tiny_run_config("unused.h5", "unused-run", 2);
  const auto error = [&](int world, const std::function<void(RunConfig&)>& change) {
    RunConfig c = base;
    change(c);
    return longnet::testing::error_message([&] { parallel_layout(c, world); });
  };
  const auto expect_in = [](const std::string& message, const std::string& part) {
    EXPECT_NE(message.find(part), std::string::npos) << message;
  };
  expect_in(error(1, [](RunConfig& c) { c.parallelism.sequence_parallel = 2; }),
            "parallelism.sequence_parallel = 2 does not divide the number of ranks, 1 (a single process");
  expect_in(error(2, [](RunConfig& c) { c.parallelism.data_parallel = 3; }),
            "parallelism.data_parallel (3) x parallelism.sequence_parallel (1) = 3 ranks, but the number of ranks is 2");
  expect_in(error(2, [](RunConfig& c) { c.training.batch_size = 3; }),
            "training.batch_size = 3 (the global batch of a micro-step) does not split over "
            "parallelism.data_parallel = 2");
  expect_in(error(4,
                  [](RunConfig& c) {
                    c.parallelism.sequence_parallel = 4;
                    c.training.seq_len = 18;
                  }),
            "training.seq_len = 18 does not split over parallelism.sequence_parallel = 4");
  expect_in(error(2,
                  [](RunConfig& c) {
                    c.parallelism.sequence_parallel = 2;
                    c.attention.segment_lengths = {6, 16};
                  }),
            "the branch (segment 6, rate 1)");
  expect_in(error(2,
                  [](RunConfig& c) {
                    c.parallelism.sequence_parallel = 2;
                    c.parallelism.sequence_algorithm = "ring";
                  }),
            "\"ring\" computes dense attention, but attention.kind is \"dilated\"");
  expect_in(error(4,
                  [](RunConfig& c) {
                    c.parallelism.sequence_parallel = 4;
                    c.parallelism.sequence_algorithm = "ring";
                    c.attention.kind = "dense";
                    c.training.seq_len = 12;
                  }),
            "gives each rank two chunks (zigzag): training.seq_len = 12 must be a multiple of 2 x "
            "sequence_parallel = 8");
  expect_in(error(4,
                  [](RunConfig& c) {
                    c.parallelism.sequence_parallel = 4;
                    c.parallelism.sequence_algorithm = "ulysses";
                  }),
            "model.heads = 2 does not split over parallelism.sequence_parallel = 4");
  expect_in(error(2,
                  [](RunConfig& c) {
                    c.parallelism.sequence_parallel = 2;
                    c.parallelism.sequence_algorithm = "ulysses";
                  }),
            "gives each rank 1 heads, not a multiple of the dilation rate 2");
  expect_in(error(2,
                  [](RunConfig& c) {
                    c.parallelism.sequence_parallel = 2;
                    c.model.kind = "encoder_decoder";
                  }),
            "model.kind = \"encoder_decoder\" trains with data parallelism only");
  expect_in(error(1, [](RunConfig& c) { c.parallelism.nproc_per_node = 2; }),
            "parallelism.nproc_per_node = 2 is for the `longnet train` command");
  // The layouts that are fine.
  RunConfig mesh = base;
  mesh.parallelism.sequence_parallel = 2;
  const ParallelLayout l = parallel_layout(mesh, 4);
  EXPECT_EQ(l.dp, 2);
  EXPECT_EQ(l.sp, 2);
  EXPECT_EQ(parallel_attention_core(mesh, 2), "dilated_parallel");
  EXPECT_EQ(parallel_attention_core(mesh, 1), "dilated");

  // Through train(): every rank stops with the error before any collective.
  ScratchDir dir("dtrain-bad");
  RunConfig c = exact_config(write_pattern_store(dir.path() / "train.h5"), dir.path() / "run", 2);
  c.training.batch_size = 3;
  expect_in(longnet::testing::error_message([&] { train_on_ranks(2, c); }), "training.batch_size = 3");
  EXPECT_FALSE(fs::exists(dir.path() / "run"));
}

// Sets environment variables for a scope (the longnet program started inside inherits them).
class ScopedEnv {
 public:
  explicit ScopedEnv(std::vector<std::pair<std::string, std::string>> vars) : vars_(std::move(vars)) {
    for (const auto& [k, v] : vars_) ::setenv(k.c_str(), v.c_str(), 1);
  }
  ~ScopedEnv() {
    for (const auto& [k, v] : vars_) ::unsetenv(k.c_str());
  }

 private:
  std::vector<std::pair<std::string, std::string>> vars_;
};

TEST(DistributedTrainerCli, SeveralProcessesWithoutNcclAreAClearError) {
  if (dist::nccl_available()) GTEST_SKIP() << "this build has NCCL: several processes train on GPUs";
  ScratchDir dir("dtrain-cli");
  const std::string run = (dir.path() / "run").string();
  std::string out;
  EXPECT_EQ(longnet::testing::run_longnet("train --quiet-config --nproc-per-node 2 --checkpoint.dir " + run, out), 1);
  EXPECT_NE(out.find("--nproc-per-node 2 starts one process per GPU, and this build has no NCCL backend"),
            std::string::npos)
      << out;
  {
    // As rank 0 of 2 under mpirun.
    ScopedEnv mpirun({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}});
    EXPECT_EQ(longnet::testing::run_longnet("train --quiet-config --checkpoint.dir " + run, out), 1);
  }
  EXPECT_NE(out.find("started as rank 0 of 2 (openmpi variables), and this build has no NCCL backend"),
            std::string::npos)
      << out;
  EXPECT_FALSE(fs::exists(run));
}

}  // namespace
}  // namespace longnet::tools
