// `longnet eval`, `generate` and `export` on an encoder-decoder fine-tuned for doc2text: a tiny
// model trained for a few steps on a tiny doc2text store, checked against direct calls of the
// model (loss, greedy generation) and a reload of the exported weights; and the errors that name
// what to use when a command is given options of the other kind of model.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/special_ids.h"
#include "data/token_store.h"
#include "data/tokenizer.h"
#include "framework/autograd/grad_mode.h"
#include "framework/core/error.h"
#include "framework/io/safetensors.h"
#include "framework/ops/ops.h"
#include "models/encoder_decoder.h"
#include "models/generation.h"
#include "tests/tools/cli_test_util.h"
#include "tests/tools/trainer_test_util.h"
#include "tools/longnet/trainer.h"
#include "tools/longnet/trainer_setup.h"

namespace longnet::tools {
namespace {

namespace fs = std::filesystem;
using testing::run_cli;
using testing::ScratchDir;

constexpr int64_t kSourceLen = 16;  // training.seq_len of the run (the encoder's input length)
constexpr int64_t kTargetLen = 6;   // data.target_len
constexpr int kExamples = 12;

const char* const kWords[] = {"the", "model", "reads", "long", "documents", "and", "attention", "grows",
                              "with", "length", "a", "token", "window", "of", "text", "is"};

// Sentence `d` of the corpus: eight words picked by a small LCG.
std::string sentence(int d) {
  uint64_t state = 977 + static_cast<uint64_t>(d) * 7919;
  std::string s;
  for (int w = 0; w < 8; ++w) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    if (w > 0) s += ' ';
    s += kWords[(state >> 33) % (sizeof(kWords) / sizeof(kWords[0]))];
  }
  return s;
}

// One tokenizer, one doc2text store (each source a sentence, its target the first two words) and
// one encoder-decoder run of a few steps, shared by the tests (training is the slow part).
class EncoderDecoderCommands : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new ScratchDir("encdec-commands");
    const fs::path corpus = dir_->path() / "corpus";
    fs::create_directories(corpus);
    for (int d = 0; d < 6; ++d) {
      std::ofstream out(corpus / ("doc" + std::to_string(d) + ".txt"));
      for (int s = 0; s < 20; ++s) out << sentence(100 + d * 20 + s) << ".\n";
    }
    tokenizer_path_ = (dir_->path() / "tok.model").string();
    const auto [code, out] = run_cli({"tokenizer", "train", "-i", corpus.string(), "-o", tokenizer_path_,
                                      "--vocab-size", "300"});
    ASSERT_EQ(code, 0) << out;
    const data::Tokenizer tok = data::Tokenizer::load(tokenizer_path_);

    data::StoreHeader h;
    h.vocab_size = tok.vocab_size();
    h.tokenizer_hash = tok.hash();
    h.task = "doc2text";
    store_path_ = (dir_->path() / "d2t.h5").string();
    data::TokenStoreWriter w(store_path_, h);
    for (int d = 0; d < kExamples; ++d) {
      const std::string text = sentence(d);
      w.add_pair(tok.encode(text), tok.encode(text.substr(0, text.find(' ', text.find(' ') + 1))));
    }
    w.commit();

    run_ = dir_->path() / "run";
    RunConfig c = testing::tiny_run_config(store_path_, run_, 6);
    c.model.kind = "encoder_decoder";
    c.model.vocab_size = tok.vocab_size();
    c.model.encoder_layers = 1;
    c.model.layers = 1;
    c.model.dropout = 0.0;
    c.data.task = "doc2text";
    c.data.target_len = kTargetLen;
    c.data.tokenizer = tokenizer_path_;
    ASSERT_EQ(c.training.seq_len, kSourceLen);
    const TrainResult r = train(c, testing::quiet());
    ASSERT_EQ(r.end_step, 6);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  static ScratchDir* dir_;
  static std::string tokenizer_path_;
  static std::string store_path_;
  static fs::path run_;
};

ScratchDir* EncoderDecoderCommands::dir_ = nullptr;
std::string EncoderDecoderCommands::tokenizer_path_;
std::string EncoderDecoderCommands::store_path_;
fs::path EncoderDecoderCommands::run_;

// (1, n) int64 tokens.
Tensor row(const std::vector<int64_t>& ids) {
  return from_vector(ids, {1, static_cast<int64_t>(ids.size())});
}

TEST_F(EncoderDecoderCommands, LoadModelHoldsTheEncoderDecoder) {
  const LoadedModel m = load_model(run_, Device::cpu());
  EXPECT_EQ(m.kind(), "encoder_decoder");
  ASSERT_TRUE(m.is_encoder_decoder());
  EXPECT_EQ(m.model, nullptr);
  EXPECT_EQ(&m.module(), m.encoder_decoder.get());
  EXPECT_FALSE(m.module().is_training());
  EXPECT_EQ(&m.seq2seq("generate"), m.encoder_decoder.get());
  try {
    m.lm("eval --passkey");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("eval --passkey"), std::string::npos) << msg;
    EXPECT_NE(msg.find("encoder_decoder"), std::string::npos) << msg;
    EXPECT_NE(msg.find("decoder-only"), std::string::npos) << msg;
  }
}

// The reported loss is the mean over every target token of the model's own loss, computed here one
// example at a time with the target unpadded (so no ignore_index is involved).
TEST_F(EncoderDecoderCommands, EvalReportsTheMeanTargetLoss) {
  const fs::path json = dir_->path() / "eval.json";
  const auto [code, out] =
      run_cli({"eval", run_.string(), "--data", store_path_, "--batch-size", "4", "--out", json.string()});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("| 16 |"), std::string::npos) << out;
  const nlohmann::json report = nlohmann::json::parse(std::ifstream(json));
  EXPECT_EQ(report.at("kind"), "encoder_decoder");
  EXPECT_EQ(report.at("step"), 6);
  const nlohmann::json& t = report.at("target_loss");
  const double loss = t.at("loss").get<double>();
  ASSERT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(t.at("perplexity").get<double>(), std::exp(loss), 1e-9 * std::exp(loss));

  const LoadedModel m = load_model(run_, Device::cpu());
  const auto store = data::TokenStore::open(store_path_);
  NoGradGuard no_grad;
  double sum = 0.0;
  int64_t tokens = 0, shortest = kTargetLen, longest = 0;
  for (int d = 0; d < kExamples; ++d) {
    std::vector<int64_t> source(kSourceLen, data::SpecialIds::pad);
    const std::vector<int32_t> doc = store->document(d);
    for (size_t i = 0; i < doc.size() && i < source.size(); ++i) source[i] = doc[i];
    std::vector<int64_t> target{data::SpecialIds::bos};
    for (const int32_t id : store->target(d)) {
      if (static_cast<int64_t>(target.size()) <= kTargetLen) target.push_back(id);
    }
    const int64_t n = static_cast<int64_t>(target.size()) - 1;
    const Tensor src = row(source);
    const Tensor tgt = row(target);
    const double ce = m.encoder_decoder
                          ->loss(src, tgt.narrow(1, 0, n).contiguous(), tgt.narrow(1, 1, n).contiguous(),
                                 compare(src, data::SpecialIds::pad, CompareOp::Eq))
                          .cross_entropy.item();
    sum += ce * static_cast<double>(n);
    tokens += n;
    shortest = std::min(shortest, n);
    longest = std::max(longest, n);
  }
  // Targets of different lengths: the batches have padding, and the per-token mean differs from
  // the mean of per-example means.
  ASSERT_LT(shortest, longest);
  EXPECT_EQ(t.at("tokens").get<int64_t>(), tokens);
  EXPECT_EQ(t.at("windows").get<int64_t>(), kExamples);
  EXPECT_NEAR(loss, sum / static_cast<double>(tokens), 1e-5 * std::abs(loss));
  // Six steps of training already beat a uniform guess over the vocabulary.
  EXPECT_LT(loss, std::log(static_cast<double>(m.model_config.vocab_size)));
}

TEST_F(EncoderDecoderCommands, EvalRejectsTheLanguageModelOptions) {
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{"--passkey"}, std::vector<std::string>{"--lengths", "16,32"}}) {
    std::vector<std::string> args{"eval", run_.string(), "--out", (dir_->path() / "bad.json").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto [code, out] = run_cli(args);
    EXPECT_EQ(code, 1) << out;
    EXPECT_NE(out.find("options for decoder-only language models given (" + extra.front() + ")"), std::string::npos)
        << out;
    EXPECT_NE(out.find("doc2text"), std::string::npos) << out;
  }
  EXPECT_FALSE(fs::exists(dir_->path() / "bad.json"));
}

// Greedy targets of two sources in one batch equal generate() on the loaded model with the sources
// tokenized as the store holds them (tokens, then EOS, cut to the training length).
TEST_F(EncoderDecoderCommands, GenerateWritesTheTargetOfEachSource) {
  const std::string long_text = sentence(3) + " " + sentence(4) + " " + sentence(5);
  const std::vector<std::string> texts{sentence(1), long_text};
  const auto [code, out] = run_cli({"generate", run_.string(), "--source", texts[0], "--source", texts[1], "-n", "5",
                                    "--temperature", "0"});
  ASSERT_EQ(code, 0) << out;

  const LoadedModel m = load_model(run_, Device::cpu());
  std::vector<std::vector<int64_t>> sources;
  for (const std::string& text : texts) {
    std::vector<int64_t> ids;
    for (const int32_t id : m.tokenizer->encode(text)) ids.push_back(id);
    ids.push_back(data::SpecialIds::eos);
    ids.resize(std::min<size_t>(ids.size(), kSourceLen));
    sources.push_back(ids);
  }
  ASSERT_EQ(sources[1].size(), static_cast<size_t>(kSourceLen));  // the long one is cut
  GenerationConfig g;
  g.max_new_tokens = 5;
  g.sampling.temperature = 0.0;
  g.stop_tokens = {data::SpecialIds::eos};
  const std::vector<GeneratedSequence> direct =
      generate(*m.encoder_decoder, sources, {{data::SpecialIds::bos}, {data::SpecialIds::bos}}, data::SpecialIds::pad, g);
  std::string expected;
  for (size_t i = 0; i < direct.size(); ++i) {
    std::vector<int32_t> ids;
    for (const int64_t t : direct[i].tokens) {
      if (t != data::SpecialIds::eos) ids.push_back(static_cast<int32_t>(t));
    }
    expected += "### source " + std::to_string(i + 1) + " (" + std::to_string(direct[i].tokens.size()) + " tokens, ";
    expected += direct[i].finish_reason + ")\n" + m.tokenizer->decode(ids) + "\n\n";
  }
  EXPECT_EQ(out, expected);

  // A source file is one document, read whole.
  const fs::path file = dir_->path() / "source.txt";
  std::ofstream(file) << texts[0];
  const auto [file_code, file_out] =
      run_cli({"generate", run_.string(), "--source-file", file.string(), "-n", "5", "--temperature", "0"});
  ASSERT_EQ(file_code, 0) << file_out;
  EXPECT_EQ(file_out, expected.substr(0, expected.find("### source 2")));
}

TEST_F(EncoderDecoderCommands, GenerateSaysWhichInputEachKindTakes) {
  auto [code, out] = run_cli({"generate", run_.string(), "--prompt", "the model"});
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("encoder_decoder"), std::string::npos) << out;
  EXPECT_NE(out.find("--source TEXT"), std::string::npos) << out;
  std::tie(code, out) = run_cli({"generate", run_.string()});
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("give a source document"), std::string::npos) << out;

  // A decoder-only LM takes prompts, not sources.
  const std::string lm_store = testing::write_pattern_store(dir_->path() / "lm.h5");
  const fs::path lm_run = dir_->path() / "lm-run";
  ASSERT_EQ(train(testing::tiny_run_config(lm_store, lm_run, 2), testing::quiet()).end_step, 2);
  std::tie(code, out) =
      run_cli({"generate", lm_run.string(), "--tokenizer", tokenizer_path_, "--source", "the model"});
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("--source and --source-file are for encoder_decoder models"), std::string::npos) << out;
  EXPECT_NE(out.find("--prompt TEXT"), std::string::npos) << out;
  const LoadedModel lm = load_model(lm_run, Device::cpu());
  try {
    lm.seq2seq("generate --source");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds a decoder model"), std::string::npos) << e.what();
  }
}

// config.json names the encoder-decoder with both attention schedules; the weights load back into
// a model built from the exported config that computes what the checkpoint's model computes.
TEST_F(EncoderDecoderCommands, ExportWritesTheEncoderDecoder) {
  const fs::path exported = dir_->path() / "exported";
  const auto [code, out] = run_cli({"export", run_.string(), "--out", exported.string()});
  ASSERT_EQ(code, 0) << out;
  const nlohmann::json cfg = nlohmann::json::parse(std::ifstream(exported / "config.json"));
  EXPECT_EQ(cfg.at("architectures"), nlohmann::json::array({"LongNetEncoderDecoder"}));
  EXPECT_EQ(cfg.at("num_encoder_layers"), 1);
  EXPECT_EQ(cfg.at("num_decoder_layers"), 1);
  const nlohmann::json schedule = nlohmann::json::parse(
      R"([{"segment_length": 8, "dilation_rate": 1}, {"segment_length": 16, "dilation_rate": 2}])");
  EXPECT_EQ(cfg.at("encoder_attention").at("kind"), "dilated");
  EXPECT_EQ(cfg.at("encoder_attention").at("dilation_schedule"), schedule);
  EXPECT_EQ(cfg.at("attention").at("dilation_schedule"), schedule);
  EXPECT_EQ(cfg.at("decoder_start_token_id"), data::SpecialIds::bos);
  EXPECT_TRUE(fs::exists(exported / kTokenizerFile));

  const LoadedModel m = load_model(run_, Device::cpu());
  longnet::ModelConfig mc = longnet::model_config_from_json(cfg.at("longnet_config"));
  EXPECT_EQ(mc.kind, "encoder_decoder");
  LongNetEncoderDecoder reloaded(mc, /*initialize=*/false);
  const Module::LoadResult r =
      reloaded.load_state_dict(io::load_safetensors((exported / kModelFile).string()), /*strict=*/true);
  EXPECT_TRUE(r.missing.empty());
  EXPECT_TRUE(r.unexpected.empty());
  EXPECT_EQ(cfg.at("parameters").get<int64_t>(), reloaded.parameter_count());
  reloaded.eval();
  NoGradGuard no_grad;
  const Tensor source = row({5, 9, 13, 17, 21, 25, data::SpecialIds::eos});
  const Tensor target = row({data::SpecialIds::bos, 7, 11});
  EXPECT_EQ(reloaded.forward(source, target).to_vector<float>(),
            m.encoder_decoder->forward(source, target).to_vector<float>());
}

}  // namespace
}  // namespace longnet::tools
