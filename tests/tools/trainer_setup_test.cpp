// Trainer setup: the run config's model mapping, devices, layer freezing, checkpoint resolution,
// the trainer state's JSON, and the model FLOPs against brute-force pair counts.
#include "tools/longnet/trainer_setup.h"

#include <string>

#include <gtest/gtest.h>

#include "framework/core/error.h"
#include "tools/longnet/model_flops.h"
#include "tools/longnet/trainer_state.h"
#include "tests/tools/trainer_test_util.h"

namespace longnet::tools {
namespace {

TEST(TrainerSetup, RunConfigMapsOntoTheModelConfig) {
  const RunConfig c = load_config(std::nullopt, {"--model.dim", "64", "--model.heads", "4", "--model.layers", "3",
                                                 "--model.ffn_dim", "96", "--model.vocab_size", "500",
                                                 "--attention.segment_lengths", "16,32", "--attention.dilation_rates",
                                                 "1,2", "--training.seed", "9", "--training.seq_len", "64"});
  const longnet::ModelConfig m = model_config_from_run(c, Device::cpu());
  EXPECT_EQ(m.dim, 64);
  EXPECT_EQ(m.heads, 4);
  EXPECT_EQ(m.layers, 3);
  EXPECT_EQ(m.ffn_dim, 96);
  EXPECT_EQ(m.vocab_size, 500);
  EXPECT_EQ(m.attention, "dilated");
  EXPECT_EQ(m.attention_config.segment_lengths, (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(m.attention_config.dilation_rates, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(m.attention_config.head_dim, 16);
  EXPECT_EQ(m.seed, 9u);
  EXPECT_EQ(m.compute_dtype, DType::F32);
}

TEST(TrainerSetup, DevicesAndDtypes) {
  EXPECT_EQ(resolve_device("cpu"), Device::cpu());
  if (!gpu_available()) {
    EXPECT_EQ(resolve_device("auto"), Device::cpu());
    try {
      resolve_device("cuda");
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("\"cpu\" or \"auto\""), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(compute_dtype_from_name("bf16"), DType::BF16);
  EXPECT_THROW(compute_dtype_from_name("f16"), Error);
}

TEST(TrainerSetup, FreezingTakesTheEmbeddingsAndTheLowestLayers) {
  longnet::ModelConfig c = model_preset("tiny");
  c.layers = 3;
  LongNetLM model(c);
  const int64_t frozen = freeze_lowest_layers(model, 2);
  int64_t count = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    const bool expect_frozen = name.find("embed") != std::string::npos || name.find("layers.0.") != std::string::npos ||
                               name.find("layers.1.") != std::string::npos;
    EXPECT_EQ(p.requires_grad(), !expect_frozen) << name;
    count += expect_frozen ? 1 : 0;
  }
  EXPECT_EQ(frozen, count);
  EXPECT_EQ(freeze_lowest_layers(model, 0), 0);
}

TEST(TrainerSetup, ResolveCheckpointNamesWhatIsMissing) {
  testing::ScratchDir dir("setup-resolve");
  try {
    resolve_checkpoint(dir.path());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no valid checkpoint"), std::string::npos) << e.what();
  }
  EXPECT_THROW(resolve_checkpoint(dir.path() / "absent"), Error);
}

TEST(TrainerSetup, TrainerStateRoundTripsAndRejectsDamage) {
  TrainerState s;
  s.step = 12;
  s.rng = {5, 77};
  s.loader = {{"epoch", 1}};
  s.skipped_steps = 2;
  s.consecutive_bad = 1;
  s.tokens_seen = 4096;
  s.tokenizer_hash = "abc";
  const TrainerState back = TrainerState::from_json(s.to_json());
  EXPECT_EQ(back.step, 12);
  EXPECT_EQ(back.rng.seed, 5u);
  EXPECT_EQ(back.rng.offset, 77u);
  EXPECT_EQ(back.loader, s.loader);
  EXPECT_EQ(back.skipped_steps, 2);
  EXPECT_EQ(back.consecutive_bad, 1);
  EXPECT_EQ(back.tokens_seen, 4096);
  EXPECT_EQ(back.tokenizer_hash, "abc");
  nlohmann::json j = s.to_json();
  j.erase("step");
  try {
    TrainerState::from_json(j);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'step'"), std::string::npos) << e.what();
  }
  j = s.to_json();
  j["tokens_seen"] = "many";
  EXPECT_THROW(TrainerState::from_json(j), Error);
}

// Pairs (query, key) a causal dilated call attends, by enumeration: in branch (w, r), head h,
// rows i and j share a segment, both are = h mod r inside it, and j <= i.
double brute_force_dilated_pairs(const AttentionConfig& c, int64_t n, int64_t heads) {
  double pairs = 0;
  for (size_t b = 0; b < c.segment_lengths.size(); ++b) {
    const int64_t w = std::min(c.segment_lengths[b], n), r = c.dilation_rates[b];
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j <= i; ++j) {
          if (i / w == j / w && (i % w) % r == h % r && (j % w) % r == h % r) ++pairs;
        }
      }
    }
  }
  return pairs;
}

TEST(ModelFlops, DilatedPairsMatchEnumeration) {
  AttentionConfig c;
  c.segment_lengths = {4, 8, 16};
  c.dilation_rates = {1, 2, 4};
  for (int64_t n : {16, 21, 40}) {
    EXPECT_EQ(attended_pairs("dilated", c, n, 4), brute_force_dilated_pairs(c, n, 4)) << "n = " << n;
  }
  EXPECT_EQ(attended_pairs("dense", c, 10, 3), 3 * 55.0);
}

TEST(ModelFlops, TrainingStepIsSixPerParameterTokenPlusAttention) {
  longnet::ModelConfig m = model_preset("tiny");
  const double attention = attention_training_flops(m, 2, 32);
  EXPECT_DOUBLE_EQ(attention, m.layers * 2 * 3.5 * 4.0 * m.head_dim() *
                                  attended_pairs(m.attention, m.attention_config, 32, m.heads));
  EXPECT_DOUBLE_EQ(training_step_flops(m, 1000, 2, 32), 6.0 * 1000 * 64 + attention);
}

}  // namespace
}  // namespace longnet::tools
