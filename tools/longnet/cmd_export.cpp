// `longnet export CHECKPOINT --out DIR`: the weights as one safetensors file plus a config.json
// describing the architecture and its dilation schedule (and the tokenizer), for use elsewhere. An
// encoder-decoder's config also gives its encoder layers and the encoder's attention schedule.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "data/special_ids.h"
#include "data/tokenizer.h"
#include "framework/io/safetensors.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/registry.h"
#include "tools/longnet/trainer_setup.h"

namespace longnet::tools {
namespace {

namespace fs = std::filesystem;

struct ExportCli {
  std::string checkpoint;
  std::string out;
  std::string dtype = "f32";
};

// An attention core's kind and, for dilated attention, its (segment length, dilation rate) pairs.
nlohmann::json attention_json(const std::string& kind, const AttentionConfig& a) {
  nlohmann::json schedule = nlohmann::json::array();
  if (kind == "dilated") {
    for (size_t i = 0; i < a.segment_lengths.size(); ++i) {
      schedule.push_back({{"segment_length", a.segment_lengths[i]}, {"dilation_rate", a.dilation_rates[i]}});
    }
  }
  return {{"kind", kind}, {"dilation_schedule", schedule}};
}

nlohmann::json export_config(const LoadedModel& m, DType dtype) {
  const longnet::ModelConfig& c = m.model_config;
  nlohmann::json j = {
      {"architectures", {m.is_encoder_decoder() ? "LongNetEncoderDecoder" : "LongNetLM"}},
      {"model_type", "longnet"},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.dim},
      {"num_hidden_layers", c.layers},
      {"num_attention_heads", c.heads},
      {"head_dim", c.head_dim()},
      {"intermediate_size", c.ffn_dim},
      {"ffn_kind", c.ffn_kind},
      {"norm", c.norm},
      {"positions", c.positions},
      {"tie_word_embeddings", c.tie_weights},
      {"attention", attention_json(c.attention, c.attention_config)},
      {"torch_dtype", dtype == DType::BF16 ? "bfloat16" : "float32"},
      {"parameters", m.module().parameter_count()},
      {"trained_steps", m.step},
      {"trained_seq_len", m.run_config.training.seq_len},
      {"longnet_config", longnet::to_json(c)},
  };
  if (m.is_encoder_decoder()) {
    // num_hidden_layers and attention describe the decoder (causal self-attention plus
    // cross-attention to the encoder output).
    j["is_encoder_decoder"] = true;
    j["num_encoder_layers"] = c.encoder_layers;
    j["num_decoder_layers"] = c.layers;
    j["encoder_attention"] = attention_json(c.encoder_attention, c.encoder_attention_config);
    j["decoder_start_token_id"] = data::SpecialIds::bos;
    j["pad_token_id"] = data::SpecialIds::pad;
    j["eos_token_id"] = data::SpecialIds::eos;
    j["trained_target_len"] = m.run_config.data.target_len;
  }
  if (m.tokenizer) j["tokenizer"] = {{"file", kTokenizerFile}, {"sha256", m.tokenizer->hash()}};
  return j;
}

int run_export(const ExportCli& cli) {
  const DType dtype = compute_dtype_from_name(cli.dtype);
  const LoadedModel m = load_model(cli.checkpoint, Device::cpu(), "f32");
  const fs::path out = cli.out;
  fs::create_directories(out);
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, t] : m.module().state_dict()) {
    tensors[name] = is_floating(t.dtype()) ? t.to(dtype) : t;
  }
  // Through a temporary name, so that DIR/model.safetensors is never half-written.
  const fs::path weights = out / kModelFile;
  const fs::path tmp = out / (std::string(kModelFile) + ".tmp");
  io::save_safetensors(tmp.string(), tensors);
  fs::rename(tmp, weights);
  data::write_file_atomic((out / "config.json").string(), export_config(m, dtype).dump(2) + "\n");
  if (m.tokenizer) data::write_file_atomic((out / kTokenizerFile).string(), m.tokenizer->bytes());
  std::printf("[export] %s (step %lld) -> %s: %s (%zu tensors, %s), config.json%s\n", m.checkpoint.string().c_str(),
              static_cast<long long>(m.step), out.string().c_str(), kModelFile, tensors.size(), cli.dtype.c_str(),
              m.tokenizer ? ", tokenizer.model" : "");
  return 0;
}

}  // namespace

void register_export(CLI::App& app) {
  auto cli = std::make_shared<ExportCli>();
  CLI::App* sub = app.add_subcommand("export", "Write a trained model as safetensors plus config.json (architecture, "
                                               "dilation schedule) and its tokenizer");
  sub->add_option("checkpoint", cli->checkpoint, "Run directory (its newest valid checkpoint) or step-N/ checkpoint")
      ->required();
  sub->add_option("--out,-o", cli->out, "Output directory")->required();
  sub->add_option("--dtype", cli->dtype, "Weight dtype: f32 or bf16")->check(CLI::IsMember({"f32", "bf16"}));
  on_run(sub, [cli] { return run_export(*cli); });
}

}  // namespace longnet::tools
