#include "tools/longnet/trainer_setup.h"

#include <fstream>
#include <regex>

#include "framework/core/error.h"
#include "framework/io/checkpoint_dir.h"
#include "framework/io/safetensors.h"

#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/runtime.h"
#endif

namespace longnet::tools {

namespace fs = std::filesystem;

int gpu_count() {
#ifdef LONGNET_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

bool gpu_available() { return gpu_count() > 0; }

Device resolve_device(const std::string& name, int local_rank) {
  if (name == "auto") return gpu_available() ? resolve_device("cuda", local_rank) : Device::cpu();
  Device d = device_from_string(name);
  if (d.is_cuda()) {
#ifdef LONGNET_WITH_CUDA
    LN_CHECK(gpu_available(), "[device] device \"", name, "\" asked for, but no CUDA device is visible; use \"cpu\" or \"auto\"");
    if (name == "cuda") d = Device::cuda(local_rank);
    LN_CHECK(d.index < gpu_count(), "[device] ", d.str(), " asked for (local rank ", local_rank, "), but ",
             gpu_count(), " CUDA devices are visible: one GPU per process");
#else
    LN_FAIL("[device] device \"", name,
            "\" asked for, but this build has no CUDA backend (configure with -DLONGNET_CUDA=ON); use \"cpu\" or \"auto\"");
#endif
  }
  return d;
}

DType compute_dtype_from_name(const std::string& name) {
  if (name == "f32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  LN_FAIL("[config] training.dtype must be \"f32\" or \"bf16\", got \"", name, "\"");
}

longnet::ModelConfig model_config_from_run(const RunConfig& c, Device device) {
  longnet::ModelConfig m = c.model.preset.empty() ? longnet::ModelConfig{} : longnet::model_preset(c.model.preset);
  if (c.model.preset.empty()) m.name = "custom";
  m.kind = c.model.kind;
  m.vocab_size = c.model.vocab_size;
  m.dim = c.model.dim;
  m.layers = c.model.layers;
  m.encoder_layers = c.model.encoder_layers;
  m.heads = c.model.heads;
  m.ffn_dim = c.model.ffn_dim;
  m.ffn_kind = c.model.ffn_kind;
  m.norm = c.model.norm;
  m.positions = c.model.positions;
  m.tie_weights = c.model.tie_weights;
  m.dropout = c.model.dropout;
  m.checkpoint_activations = c.model.checkpoint_activations;
  m.checkpoint_layers = c.model.checkpoint_layers;
  m.ffn_checkpoint = c.model.ffn_checkpoint;
  m.ffn_checkpoint_chunk = c.model.ffn_checkpoint_chunk;
  // XPOS centres its factors at max_positions / 2; keep the centre inside the trained range.
  m.max_positions = std::max(m.max_positions, c.training.seq_len);

  const AttentionSection& a = c.attention;
  AttentionConfig ac;
  ac.segment_lengths = a.segment_lengths;
  ac.dilation_rates = a.dilation_rates;
  ac.block_size = a.block_size;
  ac.pattern.kind = a.pattern;
  ac.pattern.window = a.window;
  ac.pattern.dilation = a.pattern_dilation;
  ac.pattern.global_blocks = a.global_blocks;
  ac.pattern.random_blocks = a.random_blocks;
  ac.pattern.seed = static_cast<uint64_t>(a.seed);
  ac.pattern.levels = a.levels;
  ac.pattern.level_factor = a.level_factor;
  ac.sparsity = a.sparsity;
  ac.head_dim = m.head_dim();
  ac.scorer_dim = a.scorer_dim;
  ac.regularizer = a.regularizer;
  ac.seed = static_cast<uint64_t>(a.seed);
  m.attention = a.kind;
  m.attention_config = ac;
  m.encoder_attention = a.kind;
  m.encoder_attention_config = ac;

  m.seed = static_cast<uint64_t>(c.training.seed);
  m.compute_dtype = compute_dtype_from_name(c.training.dtype);
  longnet::validate(m, device);
  return m;
}

int64_t freeze_lowest_layers(Module& model, int64_t layers) {
  if (layers <= 0) return 0;
  // Encoder layers come first (they are the lowest), then the decoder's.
  static const std::regex layer_re(R"(^(encoder|decoder)\.layers\.(\d+)\.)");
  int64_t encoder_layers = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    std::smatch m;
    if (std::regex_search(name, m, layer_re) && m[1] == "encoder") {
      encoder_layers = std::max<int64_t>(encoder_layers, std::stoll(m[2]) + 1);
    }
  }
  int64_t frozen = 0;
  for (const auto& [name, p] : model.named_parameters()) {
    std::smatch m;
    bool freeze = name.find("embed") != std::string::npos;
    if (std::regex_search(name, m, layer_re)) {
      const int64_t index = std::stoll(m[2]) + (m[1] == "decoder" ? encoder_layers : 0);
      freeze = index < layers;
    }
    if (freeze) {
      Tensor(p).requires_grad_(false);
      ++frozen;
    }
  }
  return frozen;
}

fs::path resolve_checkpoint(const fs::path& path) {
  LN_CHECK(fs::exists(path), "[checkpoint] '", path.string(), "' does not exist (expected a run directory or its step-N/)");
  std::string problem;
  if (fs::exists(path / io::kCheckpointManifest)) {
    LN_CHECK(io::verify_checkpoint(path, io::Verify::Checksums, &problem), "[checkpoint] '", path.string(),
             "' is not a valid checkpoint: ", problem);
    return path;
  }
  const auto newest = io::newest_valid(path);
  LN_CHECK(newest.has_value(), "[checkpoint] no valid checkpoint (step-N/ with a manifest that checks out) in '",
           path.string(), "'");
  return newest->path;
}

Module& LoadedModel::module() const {
  if (encoder_decoder) return *encoder_decoder;
  LN_CHECK(model != nullptr, "[checkpoint] no model loaded");
  return *model;
}

LongNetLM& LoadedModel::lm(const std::string& command) const {
  LN_CHECK(model != nullptr, "[", command, "] '", checkpoint.string(), "' holds a ", kind(), " model; `longnet ",
           command, "` takes decoder-only language models");
  return *model;
}

LongNetEncoderDecoder& LoadedModel::seq2seq(const std::string& command) const {
  LN_CHECK(encoder_decoder != nullptr, "[", command, "] '", checkpoint.string(), "' holds a ", kind(),
           " model; `longnet ", command, "` takes encoder_decoder models");
  return *encoder_decoder;
}

LoadedModel load_model(const fs::path& path, Device device, const std::string& dtype) {
  LoadedModel out;
  out.checkpoint = resolve_checkpoint(path);
  const std::string dir_name = out.checkpoint.filename().string();
  out.step = dir_name.rfind("step-", 0) == 0 ? std::stoll(dir_name.substr(5)) : 0;
  out.run_config = load_config(out.checkpoint / kRunConfigFile);
  out.model_config =
      longnet::model_config_from_json(nlohmann::json::parse(io::read_file_bytes(out.checkpoint / kModelConfigFile)));
  LN_CHECK(out.model_config.kind == "decoder" || out.model_config.kind == "encoder_decoder", "[checkpoint] '",
           out.checkpoint.string(), "' holds a model of unknown kind '", out.model_config.kind,
           "' (expected decoder or encoder_decoder)");
  out.model_config.compute_dtype = compute_dtype_from_name(dtype.empty() ? out.run_config.training.dtype : dtype);
  longnet::validate(out.model_config, device);
  {
    DefaultDeviceGuard guard(device);
    if (out.model_config.kind == "encoder_decoder") {
      out.encoder_decoder = std::make_shared<LongNetEncoderDecoder>(out.model_config, /*initialize=*/false);
    } else {
      out.model = std::make_shared<LongNetLM>(out.model_config, /*initialize=*/false);
    }
  }
  out.module().load_state_dict(io::load_safetensors((out.checkpoint / kModelFile).string(), device));
  out.module().eval();
  if (fs::exists(out.checkpoint / kTokenizerFile)) {
    out.tokenizer = data::Tokenizer::load((out.checkpoint / kTokenizerFile).string());
  }
  return out;
}

}  // namespace longnet::tools
