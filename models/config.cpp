#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "framework/core/error.h"

namespace longnet {
namespace {

// ---- presets

ModelConfig tiny() {
  ModelConfig c;
  c.name = "tiny";
  c.vocab_size = 96;
  c.dim = 32;
  c.layers = 2;
  c.heads = 4;
  c.ffn_dim = 64;
  c.max_positions = 64;
  c.attention_config.segment_lengths = {8, 16};
  c.attention_config.dilation_rates = {1, 2};
  c.encoder_attention_config = c.attention_config;
  return c;
}

ModelConfig tiny_encoder_decoder() {
  ModelConfig c = tiny();
  c.name = "tiny_encoder_decoder";
  c.kind = "encoder_decoder";
  c.encoder_layers = 2;
  return c;
}

ModelConfig small() {
  ModelConfig c;
  c.name = "small";
  c.vocab_size = 8192;
  c.dim = 256;
  c.layers = 4;
  c.heads = 4;
  c.ffn_dim = 1024;
  c.max_positions = 2048;
  c.attention_config.segment_lengths = {512, 1024, 2048};
  c.attention_config.dilation_rates = {1, 2, 4};
  c.encoder_attention_config = c.attention_config;
  return c;
}

// The LongNet scaling sizes (the GPT-3 shapes: 12 layers of 768 up to 32 of 2560, FFN 4x, GPT-2's
// vocabulary of 50257), MAGNETO sub-LN with XPOS, the paper's dilated schedule. Heads are chosen
// so that head dims are 64 or 128, which the GPU kernels take (GPT-3 has 96 at 760M, 80 at 2.7B);
// the parameter count does not depend on them.
ModelConfig paper(const std::string& name, int64_t layers, int64_t dim, int64_t heads) {
  ModelConfig c;
  c.name = name;
  c.vocab_size = 50257;
  c.dim = dim;
  c.layers = layers;
  c.heads = heads;
  c.ffn_dim = 4 * dim;
  c.max_positions = 32768;
  return c;
}

const std::vector<std::pair<std::string, std::function<ModelConfig()>>>& presets() {
  static const std::vector<std::pair<std::string, std::function<ModelConfig()>>> p{
      {"tiny", tiny},
      {"tiny_encoder_decoder", tiny_encoder_decoder},
      {"small", small},
      {"125m", [] { return paper("125m", 12, 768, 12); }},
      {"350m", [] { return paper("350m", 24, 1024, 16); }},
      {"760m", [] { return paper("760m", 24, 1536, 24); }},
      {"1.3b", [] { return paper("1.3b", 24, 2048, 16); }},
      {"2.7b", [] { return paper("2.7b", 32, 2560, 20); }},
  };
  return p;
}

// ---- validation

bool one_of(const std::string& v, std::initializer_list<const char*> options) {
  return std::any_of(options.begin(), options.end(), [&](const char* o) { return v == o; });
}

void check_core(std::vector<std::string>& problems, const char* what, const std::string& core,
                const AttentionConfig& a) {
  const std::vector<std::string> known = attention_core_names();
  if (std::find(known.begin(), known.end(), core) == known.end()) {
    std::string list;
    for (const std::string& n : known) list += (list.empty() ? "" : ", ") + n;
    problems.push_back(std::string(what) + ": unknown attention core '" + core + "' (known: " + list + ")");
    return;
  }
  if (core == "dilated") {
    if (a.segment_lengths.empty() || a.segment_lengths.size() != a.dilation_rates.size()) {
      problems.push_back(std::string(what) + ": the dilated schedule needs as many dilation rates as segment lengths (" +
                         std::to_string(a.segment_lengths.size()) + " and " + std::to_string(a.dilation_rates.size()) + ")");
    }
    for (size_t i = 0; i < std::min(a.segment_lengths.size(), a.dilation_rates.size()); ++i) {
      if (a.segment_lengths[i] <= 0 || a.dilation_rates[i] <= 0) {
        problems.push_back(std::string(what) + ": segment lengths and dilation rates must be positive (pair " +
                           std::to_string(i) + ": " + std::to_string(a.segment_lengths[i]) + ", " +
                           std::to_string(a.dilation_rates[i]) + ")");
      }
    }
  }
  if ((core == "block_sparse" || core == "adaptive") && a.block_size <= 0) {
    problems.push_back(std::string(what) + ": block size must be positive, got " + std::to_string(a.block_size));
  }
}

// ---- JSON: one list of fields serves both directions

std::string path_of(const std::string& prefix, const std::string& key) { return prefix.empty() ? key : prefix + "." + key; }

// Writes fields into a JSON object.
struct Writer {
  nlohmann::json& j;
  template <class T>
  void operator()(const char* key, T& v) {
    if constexpr (std::is_same_v<T, DType>) {
      j[key] = dtype_name(v);
    } else if constexpr (std::is_same_v<T, std::optional<double>>) {
      j[key] = v ? nlohmann::json(*v) : nlohmann::json(nullptr);
    } else {
      j[key] = v;
    }
  }
};

// Reads the fields present in a JSON object, with errors naming the key's path.
struct Reader {
  const nlohmann::json& j;
  std::string prefix;
  template <class T>
  void operator()(const char* key, T& v) {
    if (!j.contains(key)) return;
    const nlohmann::json& x = j.at(key);
    try {
      if constexpr (std::is_same_v<T, DType>) {
        v = dtype_from_name(x.get<std::string>());
      } else if constexpr (std::is_same_v<T, std::optional<double>>) {
        v = x.is_null() ? std::nullopt : std::optional<double>(x.get<double>());
      } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        // Integers must be integers: 2.5 layers is an error, not 2.
        LN_CHECK(x.is_number_integer(), "expected an integer, got ", x.dump());
        v = x.get<T>();
      } else {
        v = x.get<T>();
      }
    } catch (const nlohmann::json::exception& e) {
      LN_FAIL("[model config] key '", path_of(prefix, key), "': ", e.what());
    } catch (const Error& e) {
      LN_FAIL("[model config] key '", path_of(prefix, key), "': ", e.what());
    }
  }
};

template <class V>
void visit(BlockPattern& p, V&& v) {
  v("kind", p.kind);
  v("window", p.window);
  v("dilation", p.dilation);
  v("global_blocks", p.global_blocks);
  v("random_blocks", p.random_blocks);
  v("seed", p.seed);
  v("levels", p.levels);
  v("level_factor", p.level_factor);
}

template <class V>
void visit(AttentionConfig& a, V&& v) {
  v("scale", a.scale);
  v("segment_lengths", a.segment_lengths);
  v("dilation_rates", a.dilation_rates);
  v("block_size", a.block_size);
  v("sparsity", a.sparsity);
  v("scorer_dim", a.scorer_dim);
  v("regularizer", a.regularizer);
  v("seed", a.seed);
  v("param_dtype", a.param_dtype);
}

template <class V>
void visit(ModelConfig& c, V&& v) {
  v("name", c.name);
  v("kind", c.kind);
  v("vocab_size", c.vocab_size);
  v("dim", c.dim);
  v("layers", c.layers);
  v("encoder_layers", c.encoder_layers);
  v("heads", c.heads);
  v("ffn_dim", c.ffn_dim);
  v("ffn_kind", c.ffn_kind);
  v("norm", c.norm);
  v("norm_kind", c.norm_kind);
  v("norm_eps", c.norm_eps);
  v("positions", c.positions);
  v("rope_base", c.rope_base);
  v("xpos_scale_base", c.xpos_scale_base);
  v("max_positions", c.max_positions);
  v("tie_weights", c.tie_weights);
  v("bias", c.bias);
  v("scale_embedding", c.scale_embedding);
  v("dropout", c.dropout);
  v("activation_dropout", c.activation_dropout);
  v("attention", c.attention);
  v("encoder_attention", c.encoder_attention);
  v("cross_attention", c.cross_attention);
  v("checkpoint_activations", c.checkpoint_activations);
  v("checkpoint_layers", c.checkpoint_layers);
  v("ffn_checkpoint", c.ffn_checkpoint);
  v("ffn_checkpoint_chunk", c.ffn_checkpoint_chunk);
  v("ignore_index", c.ignore_index);
  v("seed", c.seed);
  v("compute_dtype", c.compute_dtype);
}

// The nested objects: (key, attention config) of a model.
std::vector<std::pair<const char*, AttentionConfig*>> attention_sections(ModelConfig& c) {
  return {{"attention_config", &c.attention_config},
          {"encoder_attention_config", &c.encoder_attention_config},
          {"cross_attention_config", &c.cross_attention_config}};
}

// The keys a visit names (to find unknown ones).
template <class T>
std::set<std::string> keys_of(T& value) {
  std::set<std::string> keys;
  visit(value, [&](const char* key, auto&) { keys.insert(key); });
  return keys;
}

void check_known_keys(const nlohmann::json& j, const std::set<std::string>& known, const std::string& where) {
  LN_CHECK(j.is_object(), "[model config] ", where.empty() ? "the config" : "'" + where + "'", " must be an object, got ",
           j.dump());
  std::vector<std::string> unknown;
  for (const auto& [key, value] : j.items()) {
    if (!known.count(key)) unknown.push_back(path_of(where, key));
  }
  if (unknown.empty()) return;
  std::string list, known_list;
  for (const std::string& k : unknown) list += (list.empty() ? "" : ", ") + k;
  for (const std::string& k : known) known_list += (known_list.empty() ? "" : ", ") + k;
  LN_FAIL("[model config] unknown key(s): ", list, " (known", where.empty() ? "" : " in '" + where + "'", ": ",
          known_list, ")");
}

nlohmann::json attention_to_json(AttentionConfig a) {
  LN_CHECK(a.pattern.user_layout == nullptr, "[model config] a user block layout cannot be written as JSON");
  nlohmann::json j = nlohmann::json::object();
  visit(a, Writer{j});
  nlohmann::json p = nlohmann::json::object();
  visit(a.pattern, Writer{p});
  j["pattern"] = p;
  return j;
}

void attention_from_json(const nlohmann::json& j, AttentionConfig& a, const std::string& where) {
  std::set<std::string> known = keys_of(a);
  known.insert("pattern");
  check_known_keys(j, known, where);
  visit(a, Reader{j, where});
  if (j.contains("pattern")) {
    const std::string pw = where + ".pattern";
    check_known_keys(j.at("pattern"), keys_of(a.pattern), pw);
    visit(a.pattern, Reader{j.at("pattern"), pw});
  }
}

// Parameters of the pieces, for the analytic count.
int64_t linear_params(int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); }
int64_t norm_params(const ModelConfig& c, int64_t dim) { return c.norm_kind == "layer_norm" ? 2 * dim : dim; }
int64_t core_params(const ModelConfig& c, const std::string& core, const AttentionConfig& a) {
  return core == "adaptive" ? 2 * c.head_dim() * a.scorer_dim : 0;  // the scorer's W_q and W_k
}
int64_t attention_params(const ModelConfig& c, const std::string& core, const AttentionConfig& a) {
  const bool sub_ln = c.norm == "sub_ln";
  return 4 * linear_params(c.dim, c.dim, c.bias) + (sub_ln ? norm_params(c, c.dim) : 0) + core_params(c, core, a);
}
int64_t ffn_params(const ModelConfig& c) {
  const int64_t in = linear_params(c.dim, c.ffn_dim, c.bias) * (c.ffn_kind == "swiglu" ? 2 : 1);
  return in + linear_params(c.ffn_dim, c.dim, c.bias) + (c.norm == "sub_ln" ? norm_params(c, c.ffn_dim) : 0);
}

}  // namespace

ModelConfig model_preset(const std::string& name) {
  for (const auto& [n, make] : presets()) {
    if (n == name) return make();
  }
  std::string list;
  for (const std::string& n : model_preset_names()) list += (list.empty() ? "" : ", ") + n;
  LN_FAIL("[model config] unknown preset '", name, "'; known presets: ", list);
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const auto& [n, make] : presets()) names.push_back(n);
  return names;
}

void validate(const ModelConfig& c, Device device) {
  std::vector<std::string> problems;
  const auto need = [&](bool ok, const std::string& problem) {
    if (!ok) problems.push_back(problem);
  };
  const bool enc_dec = c.kind == "encoder_decoder";
  need(one_of(c.kind, {"decoder", "encoder_decoder"}), "kind '" + c.kind + "' is not decoder or encoder_decoder");
  need(c.vocab_size > 0, "vocab_size must be positive, got " + std::to_string(c.vocab_size));
  need(c.dim > 0, "dim must be positive, got " + std::to_string(c.dim));
  need(c.layers > 0, "layers must be positive, got " + std::to_string(c.layers));
  need(c.checkpoint_layers >= 0 && c.checkpoint_layers <= std::max(c.layers, c.encoder_layers),
       "checkpoint_layers must be between 0 (all layers) and the number of layers, got " +
           std::to_string(c.checkpoint_layers));
  need(one_of(c.ffn_checkpoint, {"activation", "none", "chunked"}),
       "ffn_checkpoint '" + c.ffn_checkpoint + "' is not activation, none or chunked");
  need(c.ffn_checkpoint_chunk > 0, "ffn_checkpoint_chunk must be positive, got " + std::to_string(c.ffn_checkpoint_chunk));
  need(!enc_dec || c.encoder_layers > 0, "an encoder_decoder needs encoder_layers > 0, got " + std::to_string(c.encoder_layers));
  need(c.heads > 0, "heads must be positive, got " + std::to_string(c.heads));
  need(c.heads <= 0 || c.dim % c.heads == 0,
       "dim " + std::to_string(c.dim) + " is not divisible by heads " + std::to_string(c.heads));
  need(c.ffn_dim > 0, "ffn_dim must be positive, got " + std::to_string(c.ffn_dim));
  need(one_of(c.ffn_kind, {"gelu", "swiglu"}), "ffn_kind '" + c.ffn_kind + "' is not gelu or swiglu");
  need(one_of(c.norm, {"sub_ln", "pre_ln"}), "norm '" + c.norm + "' is not sub_ln or pre_ln");
  need(one_of(c.norm_kind, {"layer_norm", "rms_norm"}), "norm_kind '" + c.norm_kind + "' is not layer_norm or rms_norm");
  need(c.norm_eps > 0.0, "norm_eps must be positive");
  need(one_of(c.positions, {"xpos", "rope", "none"}), "positions '" + c.positions + "' is not xpos, rope or none");
  need(c.positions == "none" || c.head_dim() % 2 == 0,
       c.positions + " needs an even head dim, got " + std::to_string(c.head_dim()));
  need(c.rope_base > 0.0 && c.xpos_scale_base > 0.0, "rope_base and xpos_scale_base must be positive");
  need(c.max_positions >= 0, "max_positions must be non-negative");
  need(c.dropout >= 0.0 && c.dropout < 1.0, "dropout must be in [0, 1)");
  need(c.activation_dropout >= 0.0 && c.activation_dropout < 1.0, "activation_dropout must be in [0, 1)");
  need(is_floating(c.compute_dtype), std::string("compute_dtype must be a float type, got ") + dtype_name(c.compute_dtype));
  check_core(problems, "attention", c.attention, c.attention_config);
  if (enc_dec) {
    check_core(problems, "encoder_attention", c.encoder_attention, c.encoder_attention_config);
    check_core(problems, "cross_attention", c.cross_attention, c.cross_attention_config);
  }
  // The fused GPU kernels take 16-bit operands with these head dims; f32 and f64 go through
  // materialised scores, which take any head dim.
  if (device.is_cuda() && is_reduced_float(c.compute_dtype)) {
    const int64_t d = c.head_dim();
    need(d == 32 || d == 64 || d == 128, "head dim " + std::to_string(d) + " (dim / heads) is not one the GPU " +
                                             "attention kernels take in " + dtype_name(c.compute_dtype) +
                                             " (32, 64, 128); f32 takes any");
  }
  if (problems.empty()) return;
  std::string msg = "[model config] '" + c.name + "' is invalid:";
  for (const std::string& p : problems) msg += "\n  - " + p;
  LN_FAIL(msg);
}

int64_t analytic_parameter_count(const ModelConfig& c) {
  const bool enc_dec = c.kind == "encoder_decoder";
  // Decoder layer: self-attention + its norm, cross-attention + its norm (encoder-decoder), FFN + its norm.
  int64_t decoder_layer = attention_params(c, c.attention, c.attention_config) + norm_params(c, c.dim) + ffn_params(c) +
                          norm_params(c, c.dim);
  if (enc_dec) decoder_layer += attention_params(c, c.cross_attention, c.cross_attention_config) + norm_params(c, c.dim);
  const int64_t encoder_layer = attention_params(c, c.encoder_attention, c.encoder_attention_config) +
                                norm_params(c, c.dim) + ffn_params(c) + norm_params(c, c.dim);
  const int64_t embedding = c.vocab_size * c.dim;
  int64_t total = embedding + c.layers * decoder_layer + norm_params(c, c.dim) + (c.tie_weights ? 0 : embedding);
  if (enc_dec) total += c.encoder_layers * encoder_layer + norm_params(c, c.dim);  // shared embedding
  return total;
}

nlohmann::json to_json(const ModelConfig& config) {
  ModelConfig c = config;
  nlohmann::json j = nlohmann::json::object();
  visit(c, Writer{j});
  for (auto& [key, a] : attention_sections(c)) j[key] = attention_to_json(*a);
  return j;
}

ModelConfig model_config_from_json(const nlohmann::json& j) {
  ModelConfig c;
  std::set<std::string> known = keys_of(c);
  for (auto& [key, a] : attention_sections(c)) known.insert(key);
  check_known_keys(j, known, "");
  visit(c, Reader{j, ""});
  for (auto& [key, a] : attention_sections(c)) {
    if (j.contains(key)) attention_from_json(j.at(key), *a, key);
  }
  return c;
}

MagnetoGains magneto_gains(const ModelConfig& c) {
  if (c.norm != "sub_ln") return {};
  const double m = static_cast<double>(c.layers), n = static_cast<double>(c.encoder_layers);
  if (c.kind == "encoder_decoder") {
    return {std::sqrt(std::log(3.0 * m) * std::log(2.0 * n) / 3.0), std::sqrt(std::log(3.0 * m))};
  }
  return {1.0, std::sqrt(std::log(2.0 * m))};
}

}  // namespace longnet
