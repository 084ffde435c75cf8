// The LongNet LM on the CPU: logits and loss against independent references, causality with
// every attention core, MAGNETO initialisation statistics, the embedding scale and weight tying,
// checkpointing, 16-bit activations, a safetensors round trip (and the Python reader when it is
// installed), and a tiny model overfitting one batch.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/io/safetensors.h"
#include "framework/ops/ops.h"
#include "models/longnet_lm.h"
#include "tests/models/tiny_training.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;

// (B, N) i64 tokens drawn below `vocab`.
Tensor tokens_of(int64_t b, int64_t n, int64_t vocab, uint64_t seed) {
  Generator g(seed);
  return randint(0, vocab, {b, n}, DType::I64, Device::cpu(), &g);
}

// The sample standard deviation of a tensor's elements (mean taken as zero).
double rms(const Tensor& t) {
  double s = 0.0;
  const auto v = t.to_vector<double>();
  for (double x : v) s += x * x;
  return std::sqrt(s / static_cast<double>(v.size()));
}

TEST(LongNetLM, NamesFollowTorchscale) {
  ModelConfig c = model_preset("tiny");
  LongNetLM tied(c, false);
  const StateDict s = tied.state_dict();
  for (const char* name : {"decoder.embed_tokens.weight", "decoder.layers.0.self_attn.q_proj.weight",
                           "decoder.layers.1.self_attn.inner_attn_ln.bias", "decoder.layers.1.self_attn_layer_norm.weight",
                           "decoder.layers.0.ffn.fc1.weight", "decoder.layers.0.ffn.ffn_layernorm.weight",
                           "decoder.layers.0.final_layer_norm.bias", "decoder.layer_norm.weight"}) {
    EXPECT_EQ(s.count(name), 1u) << name;
  }
  EXPECT_EQ(s.count("decoder.output_projection.weight"), 0u);
  c.tie_weights = false;
  EXPECT_EQ(LongNetLM(c, false).state_dict().count("decoder.output_projection.weight"), 1u);
}

TEST(LongNetLM, LogitsAreTheScaledEmbeddingThroughLayersAndTiedHead) {
  const ModelConfig c = model_preset("tiny");
  LongNetLM model(c);
  model.eval();
  const Tensor tokens = tokens_of(2, 12, c.vocab_size, 1);
  // By hand: sqrt(dim) * E[tokens], the layers, the final norm, then h E^T.
  const LongNetDecoder& dec = model.decoder();
  const Tensor e = dec.embed_tokens().weight();
  EXPECT_TRUE(all_close(dec.embed(tokens), mul(embedding(e, tokens), std::sqrt(32.0)), 1e-6, 1e-6));
  const Tensor h = dec.run(dec.embed(tokens), {}).hidden;
  EXPECT_TRUE(all_close(model.forward(tokens), matmul(h, e.transpose(0, 1)), 1e-5, 1e-5));
}

TEST(LongNetLM, LossIsCrossEntropyOfTheLogitsIgnoringPadding) {
  const ModelConfig c = model_preset("tiny");
  LongNetLM model(c);
  const Tensor tokens = tokens_of(2, 10, c.vocab_size, 2);
  std::vector<int64_t> t = tokens_of(2, 10, c.vocab_size, 3).to_vector<int64_t>();
  t[3] = t[17] = c.ignore_index;
  const Tensor targets = from_vector(t, {2, 10});
  const LossOutput out = model.loss(tokens, targets);
  EXPECT_FALSE(out.aux_loss.defined());
  // Naive: -mean over kept rows of (logit[target] - logsumexp(logits)).
  const auto logits = model.forward(tokens).to_vector<double>();
  double total = 0.0;
  int kept = 0;
  for (size_t row = 0; row < 20; ++row) {
    if (t[row] == c.ignore_index) continue;
    double mx = -INFINITY;
    for (int64_t v = 0; v < c.vocab_size; ++v) mx = std::max(mx, logits[row * 96 + static_cast<size_t>(v)]);
    double z = 0.0;
    for (int64_t v = 0; v < c.vocab_size; ++v) z += std::exp(logits[row * 96 + static_cast<size_t>(v)] - mx);
    total += mx + std::log(z) - logits[row * 96 + static_cast<size_t>(t[row])];
    ++kept;
  }
  EXPECT_NEAR(out.loss.item(), total / kept, 1e-5);
  EXPECT_NEAR(out.loss.item(), std::log(96.0), 1.0);  // an untrained model is near uniform
}

TEST(LongNetLM, MagnetoInitialisationScalesTheBranchOutputs) {
  ModelConfig c = model_preset("tiny");
  c.dim = 128;
  c.ffn_dim = 256;
  c.layers = 3;
  LongNetLM model(c);
  const double gamma = std::sqrt(std::log(6.0)), d = 128.0, f = 256.0;
  const StateDict s = model.state_dict();
  const auto std_of = [&](const std::string& p) { return rms(s.at("decoder.layers.1." + p)); };
  // Xavier uniform has variance gain^2 * 2 / (fan_in + fan_out); q, k, v have gain 1/sqrt(2).
  EXPECT_NEAR(std_of("self_attn.q_proj.weight"), std::sqrt(1.0 / (2.0 * d)), 0.02 / std::sqrt(d));
  EXPECT_NEAR(std_of("self_attn.k_proj.weight"), std::sqrt(1.0 / (2.0 * d)), 0.02 / std::sqrt(d));
  EXPECT_NEAR(std_of("self_attn.v_proj.weight") / std::sqrt(1.0 / (2.0 * d)), gamma, 0.03);
  EXPECT_NEAR(std_of("self_attn.out_proj.weight") / std::sqrt(1.0 / d), gamma, 0.03);
  EXPECT_NEAR(std_of("ffn.fc1.weight") / std::sqrt(2.0 / (d + f)), gamma, 0.03);
  EXPECT_NEAR(std_of("ffn.fc2.weight") / std::sqrt(2.0 / (d + f)), gamma, 0.03);
  EXPECT_NEAR(rms(s.at("decoder.embed_tokens.weight")), 1.0 / std::sqrt(d), 0.03 / std::sqrt(d));
  EXPECT_EQ(rms(s.at("decoder.layers.0.self_attn.q_proj.bias")), 0.0);
  // Pre-LN models are not scaled.
  c.norm = "pre_ln";
  LongNetLM pre(c);
  EXPECT_NEAR(rms(pre.state_dict().at("decoder.layers.1.ffn.fc2.weight")) / std::sqrt(2.0 / (d + f)), 1.0, 0.03);
  // The same seed gives the same model; another seed another one.
  LongNetLM again(model.config());
  EXPECT_TRUE(all_close(again.state_dict().at("decoder.layers.2.ffn.fc1.weight"), s.at("decoder.layers.2.ffn.fc1.weight"), 0.0, 0.0));
  c.seed = 1;
  c.norm = "sub_ln";
  EXPECT_FALSE(all_close(LongNetLM(c).state_dict().at("decoder.layers.2.ffn.fc1.weight"), s.at("decoder.layers.2.ffn.fc1.weight")));
}

// Every attention core in the model: logits at a position do not depend on later tokens, and the
// loss's gradient reaches every parameter, finite.
class LongNetLMWithCore : public ::testing::TestWithParam<std::string> {};

TEST_P(LongNetLMWithCore, CausalForwardBackward) {
  ModelConfig c = model_preset("tiny");
  c.attention = GetParam();
  c.attention_config.block_size = 4;
  c.attention_config.sparsity = 0.5;
  c.attention_config.regularizer = 0.01;
  c.attention_config.pattern.kind = "local";
  LongNetLM model(c);
  const int64_t n = 16;
  const Tensor tokens = tokens_of(2, n, c.vocab_size, 4);
  std::vector<int64_t> changed = tokens.to_vector<int64_t>();
  for (int64_t i = 11; i < n; ++i) changed[static_cast<size_t>(i)] = (changed[static_cast<size_t>(i)] + 7) % c.vocab_size;
  const Tensor a = model.forward(tokens), b = model.forward(from_vector(changed, {2, n}));
  EXPECT_TRUE(all_close(b.narrow(1, 0, 11), a.narrow(1, 0, 11), 1e-5, 1e-5)) << GetParam();
  EXPECT_FALSE(all_close(b.narrow(1, 11, n - 11).narrow(0, 0, 1), a.narrow(1, 11, n - 11).narrow(0, 0, 1), 1e-3, 1e-3));
  const LossOutput out = model.loss(tokens, tokens_of(2, n, c.vocab_size, 5));
  EXPECT_EQ(out.aux_loss.defined(), GetParam() == "adaptive");
  out.loss.backward();
  for (const auto& [name, p] : model.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << GetParam() << " " << name;
    const auto g = p.grad().to_vector<double>();
    EXPECT_TRUE(std::all_of(g.begin(), g.end(), [](double x) { return std::isfinite(x); })) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Cores, LongNetLMWithCore, ::testing::Values("dense", "dilated", "block_sparse", "adaptive"));

TEST(LongNetLM, EveryPositionEncodingRuns) {
  for (const std::string positions : {"xpos", "rope", "none"}) {
    ModelConfig c = model_preset("tiny");
    c.positions = positions;
    LongNetLM model(c);
    const Tensor tokens = tokens_of(1, 8, c.vocab_size, 6);
    const Tensor at0 = model.forward(tokens), at5 = model.forward(tokens, 5);
    ASSERT_EQ(at0.shape(), (Shape{1, 8, 96}));
    // Relative positions: a common shift changes nothing (up to XPOS's rounding).
    EXPECT_TRUE(all_close(at5, at0, 1e-4, 1e-4)) << positions;
  }
}

TEST(LongNetLM, XposStaysFiniteFarFromItsCentreWithDilatedAttention) {
  // scale_base 1 makes XPOS overflow f32 about 70 positions from a single centre (32 here); the
  // dilated core's blocks of the largest segment (16) each get their own centre instead.
  ModelConfig c = model_preset("tiny");
  c.xpos_scale_base = 1.0;
  const auto finite = [](const Tensor& t) {
    const auto v = t.to_vector<double>();
    return std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
  };
  LongNetLM model(c);
  const int64_t n = 256;
  const LossOutput out = model.loss(tokens_of(1, n, c.vocab_size, 7), tokens_of(1, n, c.vocab_size, 8));
  EXPECT_TRUE(std::isfinite(out.loss.item()));
  out.loss.backward();
  for (const auto& [name, p] : model.named_parameters()) EXPECT_TRUE(finite(p.grad())) << name;
  // Dense attention pairs every position, so it keeps one centre and shows the overflow.
  c.attention = "dense";
  EXPECT_FALSE(std::isfinite(LongNetLM(c).loss(tokens_of(1, n, c.vocab_size, 7), tokens_of(1, n, c.vocab_size, 8))
                                 .loss.item()));
}

// One loss forward and backward of a fresh model of config c: the bytes the forward left for the
// backward, the loss, and every parameter's gradient, flattened.
struct LossRun {
  int64_t kept = 0;
  double loss = 0.0;
  std::vector<double> grads;
};

LossRun run_loss(const ModelConfig& c, const Tensor& tokens, const Tensor& targets) {
  LongNetLM model(c);
  manual_seed(3);
  LossRun r;
  const int64_t before = memory_stats(Device::cpu()).current_bytes;
  const Tensor loss = model.loss(tokens, targets).loss;
  r.kept = memory_stats(Device::cpu()).current_bytes - before;
  loss.backward();
  r.loss = loss.item();
  for (const Tensor& p : model.parameters()) {
    const auto v = p.grad().to_vector<double>();
    r.grads.insert(r.grads.end(), v.begin(), v.end());
  }
  return r;
}

void expect_same_gradients(const LossRun& got, const LossRun& want, const std::string& what) {
  ASSERT_EQ(got.grads.size(), want.grads.size()) << what;
  for (size_t i = 0; i < want.grads.size(); ++i) {
    ASSERT_NEAR(got.grads[i], want.grads[i], 1e-6 + 1e-5 * std::abs(want.grads[i])) << what << ", " << i;
  }
}

TEST(LongNetLM, CheckpointingGivesTheSameLossAndGradients) {
  ModelConfig c = model_preset("tiny");
  c.dropout = 0.1;
  const Tensor tokens = tokens_of(2, 16, c.vocab_size, 7), targets = tokens_of(2, 16, c.vocab_size, 8);
  std::vector<LossRun> runs;
  // Off, the first of the two layers only, every layer: the same weights (the config's seed).
  for (const auto& [on, layers] : {std::pair<bool, int64_t>{false, 0}, {true, 1}, {true, 0}}) {
    c.checkpoint_activations = on;
    c.checkpoint_layers = layers;
    runs.push_back(run_loss(c, tokens, targets));
  }
  for (size_t run = 1; run < 3; ++run) {
    EXPECT_EQ(runs[run].loss, runs[0].loss);
    expect_same_gradients(runs[run], runs[0], "run " + std::to_string(run));
  }
  // Each recomputed layer keeps less for the backward.
  EXPECT_GT(runs[0].kept, runs[1].kept);
  EXPECT_GT(runs[1].kept, runs[2].kept);
}

// The feed-forward policies keep, for the backward: everything (none) > all but the activation's
// output (activation) > the sublayer's input alone (chunked); the loss and gradients agree. With
// no activation dropout the GELU and the sub-LN are one fused op, which keeps what activation
// keeps under either of the first two policies.
TEST(LongNetLM, FeedForwardCheckpointPoliciesKeepLessForTheSameGradients) {
  ModelConfig c = model_preset("tiny");
  c.ffn_checkpoint_chunk = 8;  // 32 rows: 4 chunks
  const Tensor tokens = tokens_of(2, 16, c.vocab_size, 9), targets = tokens_of(2, 16, c.vocab_size, 10);
  for (const double activation_dropout : {0.1, 0.0}) {
    c.activation_dropout = activation_dropout;
    std::vector<LossRun> runs;
    for (const std::string mode : {"none", "activation", "chunked"}) {
      c.ffn_checkpoint = mode;
      runs.push_back(run_loss(c, tokens, targets));
    }
    const std::string what = "activation dropout " + std::to_string(activation_dropout);
    if (activation_dropout > 0.0) {
      EXPECT_GT(runs[0].kept, runs[1].kept) << what;
    } else {
      EXPECT_EQ(runs[0].kept, runs[1].kept) << what;
    }
    EXPECT_GT(runs[1].kept, runs[2].kept) << what;
    for (size_t run = 1; run < 3; ++run) {
      EXPECT_NEAR(runs[run].loss, runs[0].loss, 1e-6 * std::abs(runs[0].loss)) << what << ", run " << run;
      expect_same_gradients(runs[run], runs[0], what + ", run " + std::to_string(run));
    }
  }
}

TEST(LongNetLM, CheckpointLayersIsValidated) {
  ModelConfig c = model_preset("tiny");
  c.checkpoint_layers = c.layers + 1;
  EXPECT_NE(testing::error_message([&] { LongNetLM m(c); }).find("checkpoint_layers must be between 0"),
            std::string::npos);
  c = model_preset("tiny");
  c.ffn_checkpoint = "chunks";
  EXPECT_NE(testing::error_message([&] { LongNetLM m(c); }).find("ffn_checkpoint 'chunks' is not activation, none or chunked"),
            std::string::npos);
  c = model_preset("tiny");
  c.ffn_checkpoint_chunk = 0;
  EXPECT_NE(testing::error_message([&] { LongNetLM m(c); }).find("ffn_checkpoint_chunk must be positive, got 0"),
            std::string::npos);
}

TEST(LongNetLM, Bf16ActivationsTrackF32) {
  ModelConfig c = model_preset("tiny");
  LongNetLM f32(c);
  c.compute_dtype = DType::BF16;
  LongNetLM bf16(c);
  const Tensor tokens = tokens_of(2, 16, c.vocab_size, 9), targets = tokens_of(2, 16, c.vocab_size, 10);
  const Tensor logits = bf16.forward(tokens);
  EXPECT_EQ(logits.dtype(), DType::BF16);
  const LossOutput l16 = bf16.loss(tokens, targets), l32 = f32.loss(tokens, targets);
  EXPECT_EQ(l16.loss.dtype(), DType::F32);
  EXPECT_NEAR(l16.loss.item(), l32.loss.item(), 0.02 * l32.loss.item());
  l16.loss.backward();
  EXPECT_EQ(bf16.parameters()[0].grad().dtype(), DType::F32);  // f32 master weights
}

TEST(LongNetLM, SafetensorsRoundTripRestoresTheModel) {
  const ModelConfig c = model_preset("tiny");
  LongNetLM model(c);
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("longnet_lm_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "model.safetensors").string();
  io::save_safetensors(path, model.state_dict());
  LongNetLM loaded(c, false);
  loaded.load_state_dict(io::load_safetensors(path));
  const Tensor tokens = tokens_of(1, 9, c.vocab_size, 11);
  model.eval();
  loaded.eval();
  EXPECT_TRUE(all_close(loaded.forward(tokens), model.forward(tokens), 0.0, 0.0));

  // The reference reader, where Python has it (the GPU machines): names and shapes as we wrote them.
  if (std::system("python3 -c 'import safetensors' > /dev/null 2>&1") != 0) {
    std::filesystem::remove_all(dir);
    GTEST_SKIP() << "Python's safetensors package is not installed: tools/scripts/check_safetensors.py not run";
  }
  nlohmann::json expected = nlohmann::json::object();
  for (const auto& [name, t] : model.state_dict()) expected[name] = {{"shape", t.shape()}, {"dtype", "F32"}};
  const std::string summary = (dir / "summary.json").string();
  std::ofstream(summary) << expected.dump();
  const std::filesystem::path script =
      std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "tools/scripts/check_safetensors.py";
  EXPECT_EQ(std::system(("python3 " + script.string() + " " + path + " --expect-file " + summary).c_str()), 0);
  std::filesystem::remove_all(dir);
}

TEST(LongNetLM, TinyModelOverfitsOneBatch) {
  ModelConfig c = model_preset("tiny");
  LongNetLM model(c);
  const Tensor tokens = tokens_of(2, 24, c.vocab_size, 12), targets = tokens_of(2, 24, c.vocab_size, 13);
  const auto losses = testing::train_adamw(model, [&] { return model.loss(tokens, targets).loss; }, 120, 1e-2);
  EXPECT_GT(losses.front(), 3.5);
  EXPECT_LT(losses.back(), 0.05) << "loss after " << losses.size() << " steps";
}

TEST(LongNetLM, RejectsBadInputs) {
  const ModelConfig c = model_preset("tiny");
  EXPECT_NE(testing::error_message([&] { LongNetLM(model_preset("tiny_encoder_decoder")); }).find("needs a decoder config"),
            std::string::npos);
  LongNetLM model(c, false);
  EXPECT_NE(testing::error_message([&] { model.forward(zeros({4}, DType::I64)); }).find("expects tokens (B, N), got (4)"),
            std::string::npos);
  EXPECT_NE(testing::error_message([&] { model.loss(zeros({1, 4}, DType::I64), zeros({1, 5}, DType::I64)); }).find("must match tokens"),
            std::string::npos);
}

}  // namespace
}  // namespace longnet
