// The trainer: a run interrupted by a signal and resumed reproduces the uninterrupted run's losses
// and weights exactly; a process SIGKILLed while writing a checkpoint leaves the previous one
// loadable and resumable; non-finite steps are skipped and counted, and too many in a row stop the
// run; fine-tuning keeps frozen layers; bad data settings are errors that say what to do.
#include "tools/longnet/trainer.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/core/error.h"
#include "framework/io/checkpoint_dir.h"
#include "framework/io/safetensors.h"
#include "data/token_store.h"
#include "models/config.h"
#include "tests/support/gpu.h"
#include "tests/tools/trainer_test_util.h"
#include "tools/longnet/metrics.h"
#include "tools/longnet/trainer_setup.h"

extern char** environ;

namespace longnet::tools {
namespace {

namespace fs = std::filesystem;
using testing::quiet;
using testing::ScratchDir;
using testing::tiny_run_config;
using testing::write_pattern_store;

// Every tensor of two safetensors files is bitwise equal.
void expect_same_weights(const fs::path& a, const fs::path& b) {
  const auto ta = io::load_safetensors(a.string());
  const auto tb = io::load_safetensors(b.string());
  ASSERT_EQ(ta.size(), tb.size());
  for (const auto& [name, t] : ta) {
    ASSERT_TRUE(tb.count(name)) << name;
    EXPECT_EQ(t.to_vector<float>(), tb.at(name).to_vector<float>()) << name;
  }
}

TEST(Trainer, SignalThenResumeReproducesTheUninterruptedRun) {
  ScratchDir dir("trainer-resume");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  const int64_t steps = 7;

  const TrainResult whole = train(tiny_run_config(store, dir.path() / "whole", steps), quiet());
  ASSERT_EQ(whole.losses.size(), static_cast<size_t>(steps));
  EXPECT_FALSE(whole.interrupted);

  // SIGINT after step 3, twice at once as `timeout` and the --nproc-per-node spawner deliver it:
  // one stop request; the run saves step-3 and returns.
  TrainOptions interrupt = quiet();
  interrupt.handle_signals = true;
  interrupt.on_step = [](int64_t step, double) {
    if (step != 3) return;
    ::kill(::getpid(), SIGINT);
    ::kill(::getpid(), SIGINT);
  };
  const RunConfig split = tiny_run_config(store, dir.path() / "split", steps);
  const TrainResult first = train(split, interrupt);
  EXPECT_TRUE(first.interrupted);
  EXPECT_EQ(first.end_step, 3);
  EXPECT_EQ(first.last_checkpoint.filename(), "step-3");
  const TrainResult second = train(split, quiet());
  EXPECT_EQ(second.start_step, 3);
  EXPECT_EQ(second.end_step, steps);

  std::vector<std::pair<int64_t, double>> resumed = first.losses;
  resumed.insert(resumed.end(), second.losses.begin(), second.losses.end());
  ASSERT_EQ(resumed.size(), whole.losses.size());
  for (size_t i = 0; i < resumed.size(); ++i) {
    EXPECT_EQ(resumed[i].first, whole.losses[i].first);
    EXPECT_EQ(resumed[i].second, whole.losses[i].second) << "step " << resumed[i].first;  // exact
  }
  expect_same_weights(whole.last_checkpoint / kModelFile, second.last_checkpoint / kModelFile);
  // The loss fell on the patterned data.
  EXPECT_LT(whole.losses.back().second, whole.losses.front().second - 0.3);
  // Metrics of the split run hold every step once, in order.
  const auto records = read_metrics_jsonl(dir.path() / "split" / "metrics.jsonl");
  std::vector<int64_t> logged;
  for (const MetricsRecord& r : records) {
    if (r.split == "train") logged.push_back(r.step);
  }
  EXPECT_EQ(logged, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7}));
}

// The child half of KilledWhileCheckpointingLeavesThePreviousOne: trains with a checkpoint every
// two steps and SIGKILLs itself in the middle of writing step-4 (after the model, before the
// manifest). Does nothing unless the parent set LONGNET_TRAINER_CHILD_STORE.
TEST(TrainerChild, DiesWhileWritingStep4) {
  const char* store = std::getenv("LONGNET_TRAINER_CHILD_STORE");
  const char* run = std::getenv("LONGNET_TRAINER_CHILD_RUN");
  if (store == nullptr || run == nullptr) GTEST_SKIP() << "runs only as the child of the SIGKILL test";
  RunConfig c = tiny_run_config(store, run, 6);
  c.checkpoint.every = 2;
  TrainOptions o = quiet();
  o.on_checkpoint_file = [](int64_t step, const std::string& file) {
    if (step == 4 && file == "optimizer.safetensors") ::kill(::getpid(), SIGKILL);
  };
  train(c, o);
  ADD_FAILURE() << "the child should have been killed";
}

TEST(Trainer, KilledWhileCheckpointingLeavesThePreviousOne) {
  ScratchDir dir("trainer-kill");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  const fs::path run = dir.path() / "run";

  const std::string store_env = "LONGNET_TRAINER_CHILD_STORE=" + store;
  const std::string run_env = "LONGNET_TRAINER_CHILD_RUN=" + run.string();
  std::vector<char*> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  env.push_back(const_cast<char*>(store_env.c_str()));
  env.push_back(const_cast<char*>(run_env.c_str()));
  env.push_back(nullptr);
  std::string self = fs::read_symlink("/proc/self/exe").string();
  std::string filter = "--gtest_filter=TrainerChild.DiesWhileWritingStep4";
  char* argv[] = {self.data(), filter.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, env.data()), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited normally with status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  // The torn step-4 is a temporary directory; step-2 is the newest valid checkpoint.
  bool torn = false;
  for (const auto& e : fs::directory_iterator(run)) {
    torn |= e.path().filename().string().rfind("step-4.tmp-", 0) == 0;
  }
  EXPECT_TRUE(torn);
  const auto newest = io::newest_valid(run);
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(newest->step, 2);
  const LoadedModel m = load_model(run, Device::cpu());
  EXPECT_EQ(m.step, 2);

  // Resuming continues from step 2 and matches an uninterrupted run from there on.
  RunConfig c = tiny_run_config(store, run, 6);
  c.checkpoint.every = 2;
  const TrainResult resumed = train(c, quiet());
  EXPECT_EQ(resumed.start_step, 2);
  const TrainResult whole = train(tiny_run_config(store, dir.path() / "whole", 6), quiet());
  ASSERT_EQ(resumed.losses.size(), 4u);
  for (size_t i = 0; i < resumed.losses.size(); ++i) EXPECT_EQ(resumed.losses[i].second, whole.losses[i + 2].second);
  // Steps 3 and 4 ran twice; the metrics keep the resumed run's records of them only.
  std::vector<double> logged;
  for (const MetricsRecord& r : read_metrics_jsonl(run / "metrics.jsonl")) {
    if (r.split == "train") logged.push_back(r.get("loss").value());
  }
  ASSERT_EQ(logged.size(), 6u);
  for (size_t i = 2; i < logged.size(); ++i) EXPECT_NEAR(logged[i], resumed.losses[i - 2].second, 1e-12);
  for (const auto& e : fs::directory_iterator(run)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << "left over: " << e.path();
  }
}

TEST(Trainer, NonFiniteStepsAreSkippedAndCounted) {
  ScratchDir dir("trainer-nan");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  // A huge learning rate makes the weights overflow after the first update.
  RunConfig c = tiny_run_config(store, dir.path() / "run", 5);
  c.optimizer.lr = 1e30;
  c.optimizer.clip_grad_norm = 0.0;
  c.lr_scheduler.name = "constant";
  c.lr_scheduler.warmup_steps = 0;
  c.training.max_bad_steps = 10;
  const TrainResult r = train(c, quiet());
  ASSERT_EQ(r.losses.size(), 5u);
  EXPECT_TRUE(std::isfinite(r.losses[0].second));
  int64_t bad = 0;
  for (const auto& [step, loss] : r.losses) bad += std::isfinite(loss) ? 0 : 1;
  EXPECT_GE(bad, 3);
  EXPECT_EQ(r.skipped_steps, bad);
}

TEST(Trainer, TooManyNonFiniteStepsInARowStopTheRun) {
  ScratchDir dir("trainer-nan-stop");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  RunConfig c = tiny_run_config(store, dir.path() / "run", 20);
  c.optimizer.lr = 1e30;
  c.optimizer.clip_grad_norm = 0.0;
  c.lr_scheduler.name = "constant";
  c.lr_scheduler.warmup_steps = 0;
  c.training.max_bad_steps = 2;
  try {
    train(c, quiet());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 non-finite steps in a row"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("training.max_bad_steps = 2"), std::string::npos) << e.what();
  }
}

TEST(Trainer, FinetuneKeepsFrozenLayersAndStartsFromTheSource) {
  ScratchDir dir("trainer-finetune");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  const TrainResult base = train(tiny_run_config(store, dir.path() / "base", 3), quiet());
  RunConfig c = tiny_run_config(store, dir.path() / "tuned", 2);
  c.training.finetune_from = (dir.path() / "base").string();
  c.training.freeze_layers = 1;
  c.training.seq_len = 32;  // a longer context than the base run's
  const TrainResult tuned = train(c, quiet());
  EXPECT_EQ(tuned.start_step, 0);
  const auto before = io::load_safetensors((base.last_checkpoint / kModelFile).string());
  const auto after = io::load_safetensors((tuned.last_checkpoint / kModelFile).string());
  int64_t frozen = 0, trained = 0;
  for (const auto& [name, t] : before) {
    const bool same = t.to_vector<float>() == after.at(name).to_vector<float>();
    const bool should_freeze = name.find("embed") != std::string::npos || name.find("layers.0.") != std::string::npos;
    if (should_freeze) {
      EXPECT_TRUE(same) << name << " was frozen but changed";
      ++frozen;
    } else if (!same) {
      ++trained;
    }
  }
  EXPECT_GT(frozen, 0);
  EXPECT_GT(trained, 0);
  // The first fine-tuning loss is the trained model's, far below a fresh model's (about log 32).
  EXPECT_LT(tuned.losses.front().second, base.losses.front().second);
}

TEST(Trainer, Doc2TextTrainsAnEncoderDecoderAndResumesExactly) {
  ScratchDir dir("trainer-doc2text");
  const std::string store = testing::write_doc2text_store(dir.path() / "d2t.h5", [](int) { return 3; });
  const auto config = [&](const std::string& run) {
    RunConfig c = tiny_run_config(store, dir.path() / run, 8);
    c.model.kind = "encoder_decoder";
    c.model.encoder_layers = 1;
    c.model.layers = 1;
    c.data.task = "doc2text";
    c.data.target_len = 5;
    c.data.valid = store;
    c.training.eval_every = 4;
    c.training.eval_batches = 2;
    return c;
  };
  const TrainResult whole = train(config("whole"), quiet());
  ASSERT_EQ(whole.losses.size(), 8u);
  EXPECT_LT(whole.losses.back().second, whole.losses.front().second - 0.3);
  ASSERT_TRUE(whole.valid_loss.has_value());
  EXPECT_TRUE(std::isfinite(*whole.valid_loss));

  TrainOptions interrupt = quiet();
  interrupt.handle_signals = true;
  interrupt.on_step = [](int64_t step, double) {
    if (step == 5) ::kill(::getpid(), SIGINT);
  };
  const TrainResult first = train(config("split"), interrupt);
  ASSERT_TRUE(first.interrupted);
  const TrainResult second = train(config("split"), quiet());
  ASSERT_EQ(second.losses.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(second.losses[i].second, whole.losses[i + 5].second) << "step " << i + 6;
  EXPECT_EQ(*second.valid_loss, *whole.valid_loss);
}

TEST(Trainer, DataProblemsAreNamed) {
  ScratchDir dir("trainer-errors");
  RunConfig c = tiny_run_config((dir.path() / "missing.h5").string(), dir.path() / "run", 2);
  try {
    train(c, quiet());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.train"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("longnet prepare"), std::string::npos) << e.what();
  }
  c.data.train = write_pattern_store(dir.path() / "train.h5");
  c.model.vocab_size = 16;
  try {
    train(c, quiet());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.vocab_size"), std::string::npos) << e.what();
  }
}

// bf16 on the GPU with f32 parameters and optimizer state: the loss falls like the CPU's f32 run,
// MFU and memory are logged, and a resumed run continues from its checkpoint.
TEST(TrainerGpu, Bf16RunLearnsResumesAndLogsMfu) {
  LN_REQUIRE_GPU();
  ScratchDir dir("trainer-gpu");
  const std::string store = write_pattern_store(dir.path() / "train.h5");
  RunConfig c = tiny_run_config(store, dir.path() / "run", 12);
  c.model.dim = 64;  // head dim 32, which the GPU kernels take
  c.training.device = "cuda";
  c.training.dtype = "bf16";
  RunConfig cpu = c;
  cpu.training.device = "cpu";
  cpu.training.dtype = "f32";
  cpu.checkpoint.dir = (dir.path() / "cpu").string();
  const TrainResult ref = train(cpu, quiet());

  TrainOptions interrupt = quiet();
  interrupt.handle_signals = true;
  interrupt.on_step = [](int64_t step, double) {
    if (step == 6) ::kill(::getpid(), SIGINT);
  };
  const TrainResult first = train(c, interrupt);
  ASSERT_TRUE(first.interrupted);
  const TrainResult second = train(c, quiet());
  EXPECT_EQ(second.start_step, 6);
  ASSERT_EQ(second.end_step, 12);
  // bf16 tracks f32: each loss within 5% of the CPU run's.
  for (size_t i = 0; i < first.losses.size(); ++i) {
    EXPECT_NEAR(first.losses[i].second, ref.losses[i].second, 0.05 * ref.losses[i].second) << "step " << i + 1;
  }
  for (size_t i = 0; i < second.losses.size(); ++i) {
    EXPECT_NEAR(second.losses[i].second, ref.losses[i + 6].second, 0.05 * ref.losses[i + 6].second)
        << "step " << i + 7;
  }
  EXPECT_LT(second.losses.back().second, first.losses.front().second - 0.3);
  const auto records = read_metrics_jsonl(dir.path() / "run" / "metrics.jsonl");
  ASSERT_FALSE(records.empty());
  const auto mfu = records.back().get("mfu");
  ASSERT_TRUE(mfu.has_value());
  EXPECT_GT(*mfu, 0.0);
  EXPECT_LT(*mfu, 1.0);
  // The peak of the window, not what is held between steps: during the update the f32 weights,
  // their gradients and Adam's two moments are all alive, 16 bytes per parameter.
  const auto memory = records.back().get("memory_bytes");
  ASSERT_TRUE(memory.has_value());
  const int64_t params = analytic_parameter_count(model_config_from_run(c, Device::cuda(0)));
  EXPECT_GE(*memory, 16.0 * static_cast<double>(params));
}

}  // namespace
}  // namespace longnet::tools
