// Model configs: presets, validation listing every problem, the analytic parameter count against
// built modules (presets up to 350M, uninitialised so that nothing is drawn) and against the
// published sizes of the larger ones, JSON round trips, MAGNETO gains, the summary printer.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "models/config.h"
#include "models/encoder_decoder.h"
#include "models/longnet_lm.h"
#include "models/summary.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::error_message;

int64_t built_count(const ModelConfig& c) {
  if (c.kind == "encoder_decoder") return LongNetEncoderDecoder(c, false).parameter_count();
  return LongNetLM(c, false).parameter_count();
}

TEST(ModelConfig, EveryPresetIsValid) {
  const std::vector<std::string> names = model_preset_names();
  EXPECT_EQ(names, (std::vector<std::string>{"tiny", "tiny_encoder_decoder", "small", "125m", "350m", "760m", "1.3b", "2.7b"}));
  for (const std::string& n : names) {
    const ModelConfig c = model_preset(n);
    EXPECT_EQ(c.name, n);
    EXPECT_NO_THROW(validate(c)) << n;
    if (n != "tiny" && n != "tiny_encoder_decoder") {
      ModelConfig gpu = c;
      gpu.compute_dtype = DType::BF16;
      EXPECT_NO_THROW(validate(gpu, Device::cuda())) << n;
    }
  }
  const ModelConfig p = model_preset("125m");
  EXPECT_EQ(p.layers, 12);
  EXPECT_EQ(p.dim, 768);
  EXPECT_EQ(p.heads, 12);
  EXPECT_EQ(p.ffn_dim, 3072);
  EXPECT_EQ(p.positions, "xpos");
  EXPECT_EQ(p.norm, "sub_ln");
  EXPECT_EQ(p.attention, "dilated");
  EXPECT_EQ(p.attention_config.segment_lengths, (std::vector<int64_t>{2048, 4096, 8192, 16384, 32768}));
  EXPECT_EQ(p.attention_config.dilation_rates, (std::vector<int64_t>{1, 2, 4, 6, 12}));
  const std::string unknown = error_message([] { model_preset("7b"); });
  EXPECT_NE(unknown.find("unknown preset '7b'"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("125m, 350m"), std::string::npos) << unknown;
}

TEST(ModelConfig, ValidationListsEveryProblem) {
  ModelConfig c = model_preset("tiny");
  c.dim = 30;
  c.heads = 4;
  c.ffn_kind = "relu";
  c.positions = "alibi";
  c.attention_config.dilation_rates = {1};
  c.dropout = 1.0;
  c.kind = "encoder_decoder";
  c.encoder_layers = 0;
  c.cross_attention = "ring9";
  const std::string msg = error_message([&] { validate(c); });
  for (const char* part : {"dim 30 is not divisible by heads 4", "ffn_kind 'relu'", "positions 'alibi'",
                           "attention: the dilated schedule needs as many dilation rates as segment lengths (2 and 1)",
                           "dropout must be in [0, 1)", "encoder_layers > 0", "cross_attention: unknown attention core 'ring9'"}) {
    EXPECT_NE(msg.find(part), std::string::npos) << part << " not in: " << msg;
  }
}

TEST(ModelConfig, GpuKernelLimitsAreCheckedOnlyForGpus) {
  ModelConfig c = model_preset("tiny");
  c.dim = 96;
  c.heads = 1;  // head dim 96: fine on the CPU, and in f32 on the GPU (materialised scores)
  c.compute_dtype = DType::F32;
  EXPECT_NO_THROW(validate(c, Device::cpu()));
  EXPECT_NO_THROW(validate(c, Device::cuda()));
  c.compute_dtype = DType::BF16;  // the fused kernels take head dims 32, 64 and 128 only
  EXPECT_NO_THROW(validate(c, Device::cpu()));
  const std::string msg = error_message([&] { validate(c, Device::cuda()); });
  EXPECT_NE(msg.find("head dim 96"), std::string::npos) << msg;
  EXPECT_NE(msg.find("32, 64, 128"), std::string::npos) << msg;
  c.heads = 3;  // 32
  EXPECT_NO_THROW(validate(c, Device::cuda()));
}

TEST(ModelConfig, AnalyticCountEqualsBuiltModules) {
  for (const std::string n : {"tiny", "tiny_encoder_decoder", "small", "125m", "350m"}) {
    const ModelConfig c = model_preset(n);
    EXPECT_EQ(built_count(c), analytic_parameter_count(c)) << n;
  }
  // Every option that changes the count.
  std::vector<ModelConfig> variants;
  for (const char* kind : {"tiny", "tiny_encoder_decoder"}) {
    ModelConfig c = model_preset(kind);
    c.tie_weights = false;
    variants.push_back(c);
    c.ffn_kind = "swiglu";
    variants.push_back(c);
    c.norm = "pre_ln";
    variants.push_back(c);
    c.norm_kind = "rms_norm";
    variants.push_back(c);
    c.bias = false;
    variants.push_back(c);
    c.attention = "adaptive";
    c.attention_config.block_size = 4;
    c.encoder_attention = "block_sparse";
    c.encoder_attention_config.block_size = 4;
    variants.push_back(c);
    c.norm = "sub_ln";
    c.positions = "none";
    c.cross_attention = "adaptive";
    c.cross_attention_config.scorer_dim = 5;
    variants.push_back(c);
  }
  for (size_t i = 0; i < variants.size(); ++i) {
    EXPECT_EQ(built_count(variants[i]), analytic_parameter_count(variants[i])) << "variant " << i;
  }
}

TEST(ModelConfig, PaperPresetsHaveThePublishedSizes) {
  // The LongNet scaling sizes (GPT-3's shapes). Ours have no learned position embeddings (XPOS)
  // and carry MAGNETO's extra norms, so they differ by a little.
  const std::vector<std::pair<std::string, double>> published{
      {"125m", 125e6}, {"350m", 350e6}, {"760m", 760e6}, {"1.3b", 1.3e9}, {"2.7b", 2.7e9}};
  for (const auto& [name, size] : published) {
    const double n = static_cast<double>(analytic_parameter_count(model_preset(name)));
    EXPECT_NEAR(n / size, 1.0, 0.03) << name << ": " << n;
  }
  // The per-layer formula by hand for 125M: 4 (d^2 + d) attention, 2 d^2 + ... FFN, norms.
  const int64_t d = 768, f = 3072, v = 50257;
  const int64_t layer = 4 * (d * d + d) + 2 * d /*inner_attn_ln*/ + 2 * d /*self_attn_layer_norm*/ + (d * f + f) +
                        (f * d + d) + 2 * f /*ffn_layernorm*/ + 2 * d /*final_layer_norm*/;
  EXPECT_EQ(analytic_parameter_count(model_preset("125m")), v * d + 12 * layer + 2 * d);
}

TEST(ModelConfig, JsonRoundTripAndErrors) {
  ModelConfig c = model_preset("tiny_encoder_decoder");
  c.compute_dtype = DType::BF16;
  c.attention_config.scale = 0.25;
  c.attention_config.pattern.kind = "dilated";
  c.cross_attention_config.sparsity = 0.75;
  c.seed = 42;
  const nlohmann::json j = to_json(c);
  EXPECT_EQ(j["compute_dtype"], "bf16");
  EXPECT_EQ(j["attention_config"]["pattern"]["kind"], "dilated");
  const ModelConfig back = model_config_from_json(j);
  EXPECT_EQ(to_json(back), j);
  EXPECT_EQ(back.attention_config.scale, std::optional<double>(0.25));
  EXPECT_EQ(back.encoder_attention_config.scale, std::nullopt);
  // Partial JSON keeps the defaults.
  EXPECT_EQ(model_config_from_json({{"dim", 64}}).layers, ModelConfig().layers);
  const std::string unknown = error_message([] { model_config_from_json({{"dims", 64}, {"layer", 2}}); });
  EXPECT_NE(unknown.find("unknown key(s): dims, layer"), std::string::npos) << unknown;
  const std::string nested = error_message([] { model_config_from_json({{"attention_config", {{"segments", {1}}}}}); });
  EXPECT_NE(nested.find("attention_config.segments"), std::string::npos) << nested;
  const std::string type = error_message([] { model_config_from_json({{"layers", 2.5}}); });
  EXPECT_NE(type.find("key 'layers'"), std::string::npos) << type;
  const std::string dtype = error_message([] { model_config_from_json({{"compute_dtype", "f8"}}); });
  EXPECT_NE(dtype.find("key 'compute_dtype'"), std::string::npos) << dtype;
}

TEST(ModelConfig, MagnetoGains) {
  ModelConfig c = model_preset("tiny");
  c.layers = 12;
  EXPECT_DOUBLE_EQ(magneto_gains(c).decoder, std::sqrt(std::log(24.0)));
  c.kind = "encoder_decoder";
  c.encoder_layers = 6;
  c.layers = 4;
  EXPECT_DOUBLE_EQ(magneto_gains(c).encoder, std::sqrt(std::log(12.0) * std::log(12.0) / 3.0));
  EXPECT_DOUBLE_EQ(magneto_gains(c).decoder, std::sqrt(std::log(12.0)));
  c.norm = "pre_ln";
  EXPECT_EQ(magneto_gains(c).decoder, 1.0);
  EXPECT_EQ(magneto_gains(c).encoder, 1.0);
}

TEST(ModelConfig, SummaryListsModulesAndTotals) {
  const ModelConfig c = model_preset("tiny");
  LongNetLM model(c, false);
  const std::string full = model_summary(model, {-1, &c});
  EXPECT_NE(full.find("decoder.layers.1.self_attn.q_proj"), std::string::npos) << full;
  EXPECT_NE(full.find("weight(32, 32) bias(32)"), std::string::npos) << full;
  EXPECT_NE(full.find("decoder.embed_tokens"), std::string::npos);
  // 96 * 32 embedding, 2 layers of 4 * (32 * 32 + 32) + 5 norms of 32 or 64 wide (2 * 64 + 2 * 64 + 2 * 128 ...)
  // + (32 * 64 + 64) + (64 * 32 + 32), final norm 64: 3072 + 2 * 8736 + 64.
  EXPECT_NE(full.find("total: 20,608 parameters"), std::string::npos) << full;
  EXPECT_NE(full.find("(equal)"), std::string::npos) << full;
  // Depth 3: one row per layer with its whole count.
  const std::string short_form = model_summary(model, {3, nullptr});
  EXPECT_NE(short_form.find("decoder.layers.0"), std::string::npos) << short_form;
  EXPECT_EQ(short_form.find("q_proj"), std::string::npos) << short_form;
  EXPECT_EQ(human_count(124'439'808), "124.4M");
  EXPECT_EQ(human_count(2'650'000'000), "2.65B");
  EXPECT_EQ(human_count(999), "999");
}

}  // namespace
}  // namespace longnet
