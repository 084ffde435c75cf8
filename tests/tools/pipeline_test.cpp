// The whole program end to end on a tiny config, through the same command-line code the `longnet`
// binary runs: tokenizer train -> prepare -> train (interrupted by SIGINT) -> train again (resumes)
// -> eval -> generate (one prompt and a batch file) -> export.
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/special_ids.h"
#include "data/tokenizer.h"
#include "framework/core/error.h"
#include "framework/io/checkpoint_dir.h"
#include "framework/io/safetensors.h"
#include "models/generation.h"
#include "tests/tools/cli_test_util.h"
#include "tests/tools/trainer_test_util.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/trainer.h"
#include "tools/longnet/trainer_setup.h"

namespace longnet::tools {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;
using testing::ScratchDir;

// Documents of English-like sentences from a small word list (a deterministic LCG picks words).
void write_corpus(const fs::path& dir, int documents) {
  static const char* kWords[] = {"the", "model", "reads", "long", "documents", "and", "attention", "grows",
                                 "with", "length", "a", "token", "window", "of", "text", "is", "split",
                                 "into", "dilated", "segments", "heads", "merge", "by", "softmax"};
  uint64_t state = 12345;
  fs::create_directories(dir);
  for (int d = 0; d < documents; ++d) {
    std::ofstream out(dir / ("doc" + std::to_string(d) + ".txt"));
    for (int s = 0; s < 60; ++s) {
      for (int w = 0; w < 8; ++w) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        out << (w ? " " : "") << kWords[(state >> 33) % (sizeof(kWords) / sizeof(kWords[0]))];
      }
      out << ".\n";
    }
  }
}

TEST(Pipeline, PrepareTrainInterruptResumeEvalGenerateExport) {
  ScratchDir dir("pipeline");
  const fs::path corpus = dir.path() / "corpus", data = dir.path() / "data", run = dir.path() / "run";
  write_corpus(corpus, 12);
  const std::string tok = (data / "tok.model").string();
  fs::create_directories(data);

  auto [code, out] = run_cli({"tokenizer", "train", "-i", corpus.string(), "-o", tok, "--vocab-size", "300"});
  ASSERT_EQ(code, 0) << out;
  std::tie(code, out) = run_cli({"prepare", "-t", tok, "-i", corpus.string(), "-o", data.string(), "--val-fraction",
                                 "0.25", "--no-progress", "--threads", "1"});
  ASSERT_EQ(code, 0) << out;

  const fs::path config_file = dir.path() / "tiny.toml";
  std::ofstream(config_file) << "[model]\nvocab_size = 300\ndim = 32\nlayers = 2\nheads = 2\nffn_dim = 64\n"
                             << "[attention]\nkind = \"dilated\"\nsegment_lengths = [16, 32]\ndilation_rates = [1, 2]\n"
                             << "[optimizer]\nlr = 3e-3\n[lr_scheduler]\nname = \"cosine\"\nwarmup_steps = 1\n"
                             << "[training]\nsteps = 8\nbatch_size = 2\nseq_len = 32\ndevice = \"cpu\"\n"
                             << "eval_every = 4\neval_batches = 1\nlog_every = 1\n"
                             << "[data]\ntrain = \"" << (data / "train.h5").string() << "\"\nvalid = \""
                             << (data / "val.h5").string() << "\"\ntokenizer = \"" << tok << "\"\n"
                             << "[checkpoint]\ndir = \"" << run.string() << "\"\nevery = 4\nkeep_last = 2\n"
                             << "[metrics]\ntensorboard = true\nreport = true\n";

  // A SIGINT after step 3 stops the run with a checkpoint at step 3.
  TrainOptions interrupt;
  interrupt.console = nullptr;
  interrupt.on_step = [](int64_t step, double) {
    if (step == 3) ::kill(::getpid(), SIGINT);
  };
  const TrainResult first = train(load_config(config_file), interrupt);
  ASSERT_TRUE(first.interrupted);
  ASSERT_EQ(io::newest_valid(run)->step, 3);

  // The same command again resumes and finishes.
  std::tie(code, out) = run_cli({"train", "--config", config_file.string(), "--quiet-config"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("resumed from"), std::string::npos) << out;
  EXPECT_NE(out.find("done: 8 steps"), std::string::npos) << out;
  EXPECT_EQ(io::newest_valid(run)->step, 8);
  EXPECT_TRUE(fs::exists(run / "report.html"));
  EXPECT_TRUE(fs::exists(run / "tensorboard"));
  EXPECT_TRUE(fs::exists(run / "config.toml"));

  // eval: perplexity at two lengths (one beyond training) and a passkey grid, as JSON.
  const fs::path eval_json = dir.path() / "eval.json";
  std::tie(code, out) = run_cli({"eval", run.string(), "--lengths", "32,128", "--windows", "2", "--passkey",
                                 "--passkey-lengths", "320", "--depths", "0,1", "--samples", "1", "--out",
                                 eval_json.string()});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("| 128 |"), std::string::npos) << out;
  const nlohmann::json ev = nlohmann::json::parse(io::read_file_bytes(eval_json));
  EXPECT_EQ(ev.at("step"), 8);
  ASSERT_EQ(ev.at("perplexity").size(), 2u);
  for (const auto& row : ev.at("perplexity")) {
    EXPECT_TRUE(std::isfinite(row.at("loss").get<double>()));
    EXPECT_NEAR(row.at("perplexity").get<double>(), std::exp(row.at("loss").get<double>()), 1e-6 * row.at("perplexity").get<double>());
    EXPECT_LT(row.at("loss").get<double>(), std::log(300.0));  // better than uniform after training
  }
  EXPECT_EQ(ev.at("passkey").size(), 2u);

  // generate, greedy: the streamed text is the prompt plus the decoding of generate()'s tokens.
  std::tie(code, out) = run_cli({"generate", run.string(), "-p", "the model", "-n", "6", "--temperature", "0",
                                 "--no-stop"});
  ASSERT_EQ(code, 0) << out;
  const LoadedModel m = load_model(run, Device::cpu());
  std::vector<int64_t> prompt{data::SpecialIds::eos};
  for (int32_t id : m.tokenizer->encode("the model")) prompt.push_back(id);
  GenerationConfig g;
  g.max_new_tokens = 6;
  g.sampling.temperature = 0.0;
  const std::vector<int64_t> ids = generate(*m.model, {prompt}, g).front().tokens;
  const std::string expected = "the model" + m.tokenizer->decode(std::vector<int32_t>(ids.begin(), ids.end())) + "\n";
  EXPECT_EQ(out, expected);

  // A batch of prompts from a file.
  const fs::path prompts = dir.path() / "prompts.txt";
  std::ofstream(prompts) << "the model\n\nattention grows\n";
  std::tie(code, out) = run_cli({"generate", run.string(), "--prompt-file", prompts.string(), "-n", "4"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("### prompt 1"), std::string::npos) << out;
  EXPECT_NE(out.find("### prompt 2"), std::string::npos) << out;
  EXPECT_EQ(out.find("### prompt 3"), std::string::npos) << out;

  // export: the weights equal the checkpoint's; config.json carries the dilation schedule.
  const fs::path exported = dir.path() / "exported";
  std::tie(code, out) = run_cli({"export", run.string(), "--out", exported.string()});
  ASSERT_EQ(code, 0) << out;
  const auto a = io::load_safetensors((exported / kModelFile).string());
  const auto b = io::load_safetensors((run / "step-8" / kModelFile).string());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : b) EXPECT_EQ(a.at(name).to_vector<float>(), t.to_vector<float>()) << name;
  const nlohmann::json cfg = nlohmann::json::parse(io::read_file_bytes(exported / "config.json"));
  EXPECT_EQ(cfg.at("vocab_size"), 300);
  EXPECT_EQ(cfg.at("attention").at("dilation_schedule"),
            nlohmann::json::parse(R"([{"segment_length": 16, "dilation_rate": 1}, {"segment_length": 32, "dilation_rate": 2}])"));
  EXPECT_TRUE(fs::exists(exported / kTokenizerFile));
}

TEST(Pipeline, CommandErrorsSayWhatIsWrong) {
  ScratchDir dir("pipeline-errors");
  auto [code, out] = run_cli({"eval", (dir.path() / "nothing").string()});
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("does not exist"), std::string::npos) << out;
  try {
    load_model(dir.path(), Device::cpu());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no valid checkpoint"), std::string::npos) << e.what();
  }
  std::tie(code, out) = run_cli({"finetune", "--training.device", "cpu"});
  EXPECT_EQ(code, 2);
}

}  // namespace
}  // namespace longnet::tools
