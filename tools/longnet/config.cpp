#include "tools/longnet/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>
#include <type_traits>

#include <unistd.h>

#include "framework/core/error.h"
#include "models/config.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/registry.h"

namespace longnet::tools {
namespace {

using io::TomlValue;

// Name and field of a key in one go: LN_KEY(model.dim) -> "model.dim", &config.model.dim.
#define LN_KEY(member) #member, +[](RunConfig& c) -> ConfigField { return &c.member; }

ConfigKey plain(std::string key, ConfigField (*field)(RunConfig&), std::string help) {
  return ConfigKey{std::move(key), field, std::move(help), std::nullopt, std::nullopt, {}};
}

ConfigKey ranged(std::string key, ConfigField (*field)(RunConfig&), std::string help, std::optional<double> min,
                 std::optional<double> max = std::nullopt) {
  return ConfigKey{std::move(key), field, std::move(help), min, max, {}};
}

ConfigKey choice(std::string key, ConfigField (*field)(RunConfig&), std::string help, std::vector<std::string> choices) {
  return ConfigKey{std::move(key), field, std::move(help), std::nullopt, std::nullopt, std::move(choices)};
}

// "" (no preset) and every model preset.
std::vector<std::string> preset_choices() {
  std::vector<std::string> out{""};
  for (const std::string& n : longnet::model_preset_names()) out.push_back(n);
  return out;
}

std::vector<ConfigKey> make_schema() {
  return {
      // [model]
      choice(LN_KEY(model.preset), "Named model (models/config.h) whose [model] values apply before explicit keys",
             preset_choices()),
      choice(LN_KEY(model.kind), "Decoder-only LM or encoder-decoder (document-to-text)", {"decoder", "encoder_decoder"}),
      ranged(LN_KEY(model.vocab_size), "Vocabulary size (the tokenizer's)", 2),
      ranged(LN_KEY(model.dim), "Model width", 1),
      ranged(LN_KEY(model.layers), "Decoder layers", 1),
      ranged(LN_KEY(model.encoder_layers), "Encoder layers (encoder_decoder only)", 0),
      ranged(LN_KEY(model.heads), "Attention heads (must divide dim)", 1),
      ranged(LN_KEY(model.ffn_dim), "Feed-forward hidden width", 1),
      choice(LN_KEY(model.ffn_kind), "Feed-forward activation", {"gelu", "swiglu"}),
      choice(LN_KEY(model.norm), "Block layout: MAGNETO sub-LN or pre-LN", {"sub_ln", "pre_ln"}),
      choice(LN_KEY(model.positions), "Relative positions", {"xpos", "rope", "none"}),
      plain(LN_KEY(model.tie_weights), "Share the token embedding with the output projection"),
      ranged(LN_KEY(model.dropout), "Dropout probability", 0.0, 1.0),
      plain(LN_KEY(model.checkpoint_activations), "Recompute each block's forward in backward (saves memory)"),
      ranged(LN_KEY(model.checkpoint_layers), "With checkpoint_activations: how many layers (the first ones) recompute; 0: all", 0),
      choice(LN_KEY(model.ffn_checkpoint),
             "What each feed-forward sublayer keeps for the backward: activation (recomputes the GELU and sub-LN), "
             "none, chunked (its input alone; recomputed ffn_checkpoint_chunk tokens at a time: the longest sequences)",
             {"activation", "none", "chunked"}),
      ranged(LN_KEY(model.ffn_checkpoint_chunk), "With ffn_checkpoint = chunked: tokens per recomputed chunk", 1),
      // [attention]
      choice(LN_KEY(attention.kind), "Attention core", {"dense", "dilated", "block_sparse", "adaptive"}),
      ranged(LN_KEY(attention.segment_lengths), "dilated: segment lengths w_i, paired with dilation_rates", 1),
      ranged(LN_KEY(attention.dilation_rates), "dilated: dilation rates r_i, one per segment length", 1),
      ranged(LN_KEY(attention.block_size), "block_sparse, adaptive: rows per block", 1),
      choice(LN_KEY(attention.pattern), "block_sparse: which key blocks each query block visits",
             {"local", "dilated", "global_local", "random", "hierarchical"}),
      ranged(LN_KEY(attention.window), "block_sparse: blocks visited on each side (dilated: steps)", 0),
      ranged(LN_KEY(attention.pattern_dilation), "block_sparse dilated pattern: distance between visited blocks", 1),
      ranged(LN_KEY(attention.global_blocks), "block_sparse global_local, hierarchical: global leading blocks", 0),
      ranged(LN_KEY(attention.random_blocks), "block_sparse random: blocks drawn per query block", 0),
      ranged(LN_KEY(attention.levels), "block_sparse hierarchical: number of scales", 1),
      ranged(LN_KEY(attention.level_factor), "block_sparse hierarchical: growth of the stride per scale", 2),
      ranged(LN_KEY(attention.sparsity), "adaptive: fraction of key blocks left out per query block", 0.0, 1.0),
      ranged(LN_KEY(attention.scorer_dim), "adaptive: width of the learned block scorer", 1),
      ranged(LN_KEY(attention.regularizer), "adaptive: weight of the sparsity regulariser in the loss", 0.0),
      ranged(LN_KEY(attention.seed), "Seed of random patterns and the adaptive scorer's initial weights", 0),
      // [optimizer]
      choice(LN_KEY(optimizer.name), "Optimizer", {"sgd", "adam", "adamw"}),
      ranged(LN_KEY(optimizer.lr), "Peak learning rate", 0.0),
      ranged(LN_KEY(optimizer.betas), "adam, adamw: (beta1, beta2)", 0.0, 1.0),
      ranged(LN_KEY(optimizer.eps), "adam, adamw: denominator epsilon", 0.0),
      ranged(LN_KEY(optimizer.weight_decay), "Weight decay (decoupled for adamw, L2 for adam and sgd)", 0.0),
      ranged(LN_KEY(optimizer.momentum), "sgd: momentum", 0.0, 1.0),
      plain(LN_KEY(optimizer.nesterov), "sgd: Nesterov momentum"),
      ranged(LN_KEY(optimizer.clip_grad_norm), "Clip gradients to this global L2 norm (0: no clipping)", 0.0),
      plain(LN_KEY(optimizer.no_decay),
            "Parameters whose name contains any of these get no weight decay (as do all 1-D parameters)"),
      // [lr_scheduler]
      choice(LN_KEY(lr_scheduler.name), "Learning-rate schedule after warm-up",
             {"constant", "cosine", "linear", "polynomial", "inverse_sqrt"}),
      ranged(LN_KEY(lr_scheduler.warmup_steps), "Linear warm-up updates", 0),
      ranged(LN_KEY(lr_scheduler.min_lr), "Rate at the end of the decay (floor for inverse_sqrt)", 0.0),
      ranged(LN_KEY(lr_scheduler.power), "polynomial: exponent of the decay (1: linear)", 0.0),
      ranged(LN_KEY(lr_scheduler.total_steps), "Update at which the decay ends (0: training.steps)", 0),
      // [training]
      ranged(LN_KEY(training.steps), "Optimizer updates", 1),
      ranged(LN_KEY(training.batch_size), "Sequences per micro-batch, over all data-parallel ranks together", 1),
      ranged(LN_KEY(training.seq_len), "Tokens per sequence", 1),
      ranged(LN_KEY(training.grad_accum), "Micro-batches accumulated per update", 1),
      choice(LN_KEY(training.dtype), "Compute dtype (bf16 keeps f32 master weights and optimizer state)",
             {"f32", "bf16"}),
      choice(LN_KEY(training.device), "Device (auto: a GPU when one is present)", {"auto", "cpu", "cuda"}),
      ranged(LN_KEY(training.seed), "Seed of initialisation, dropout and data order", 0),
      ranged(LN_KEY(training.eval_every), "Evaluate every this many updates (0: never)", 0),
      ranged(LN_KEY(training.eval_batches), "Validation batches per evaluation", 1),
      ranged(LN_KEY(training.log_every), "Log metrics every this many updates", 1),
      ranged(LN_KEY(training.max_bad_steps), "Consecutive non-finite steps tolerated (skipped) before stopping", 0),
      plain(LN_KEY(training.finetune_from), "Run directory (its newest valid checkpoint) or checkpoint whose model weights start the run (fine-tuning)"),
      ranged(LN_KEY(training.freeze_layers), "Lowest layers (and the embeddings) kept frozen when > 0", 0),
      // [data]
      plain(LN_KEY(data.train), "Training token store (HDF5)"),
      plain(LN_KEY(data.valid), "Validation token store (HDF5)"),
      plain(LN_KEY(data.tokenizer), "SentencePiece model"),
      plain(LN_KEY(data.document_aware), "Attention does not cross document boundaries inside a sequence"),
      choice(LN_KEY(data.task), "Training task", {"lm", "passkey", "doc2text"}),
      ranged(LN_KEY(data.target_len), "doc2text: target tokens per example (BOS, the titles, EOS; cut or padded)", 1),
      // [parallelism]
      ranged(LN_KEY(parallelism.data_parallel), "Data-parallel replicas (0: all ranks sequence parallelism leaves)", 0),
      ranged(LN_KEY(parallelism.sequence_parallel), "Ranks each sequence is split over", 1),
      choice(LN_KEY(parallelism.sequence_algorithm), "Sequence-parallel attention", {"dilated", "ring", "ulysses"}),
      ranged(LN_KEY(parallelism.nproc_per_node), "Processes the built-in launcher starts on this node", 1),
      plain(LN_KEY(parallelism.zero1), "ZeRO-1: each rank keeps and updates the optimizer state of its share of the parameters"),
      ranged(LN_KEY(parallelism.bucket_mb), "Gradient all-reduce bucket size in MiB (buckets launch during backward)", 0.0, 4096.0),
      ranged(LN_KEY(parallelism.timeout_s), "Seconds a collective may take before the run is aborted (a dead or stuck rank)", 1, 86400),
      // [checkpoint]
      plain(LN_KEY(checkpoint.dir), "Run directory: checkpoints (step-N/), config.toml, metrics"),
      ranged(LN_KEY(checkpoint.every), "Save every this many updates (0: only at the end)", 0),
      ranged(LN_KEY(checkpoint.keep_last), "Checkpoints kept (0: all)", 0),
      // [metrics]
      plain(LN_KEY(metrics.jsonl), "Write metrics.jsonl in the run directory"),
      plain(LN_KEY(metrics.tensorboard), "Write TensorBoard event files under tensorboard/ in the run directory"),
      plain(LN_KEY(metrics.report), "Write report.html in the run directory at the end"),
      // [debug]
      plain(LN_KEY(debug.detect_anomaly), "Check every gradient for NaN/Inf and name the op that made it"),
      choice(LN_KEY(debug.log_level), "Console verbosity", {"error", "warn", "info", "debug"}),
  };
}

#undef LN_KEY

// Edit distance with adjacent transpositions (optimal string alignment), for "did you mean".
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

std::string closest_key(const std::string& key) {
  const std::string* best = nullptr;
  size_t best_d = 0;
  for (const ConfigKey& k : config_schema()) {
    // A key in the wrong section is as good a guess as a typo: compare the part after the dot too.
    const std::string leaf = key.substr(key.rfind('.') + 1);
    const size_t d = std::min(edit_distance(key, k.key), edit_distance(leaf, k.key.substr(k.key.find('.') + 1)) + 1);
    if (!best || d < best_d) best = &k.key, best_d = d;
  }
  return *best;
}

const ConfigKey& require_key(const std::string& key, const std::string& origin) {
  const ConfigKey* k = find_config_key(key);
  LN_CHECK(k != nullptr, "[config] ", origin, ": unknown key '", key, "' (did you mean '", closest_key(key), "'?)");
  return *k;
}

std::string join(const std::vector<std::string>& items, const std::string& sep, const std::string& quote = "") {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + quote + items[i] + quote;
  return out;
}

std::string format_number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// Checks the range or the allowed values of one scalar (an element, for lists).
void check_scalar(const ConfigKey& k, const TomlValue& v, const std::string& origin) {
  auto fail = [&](const auto&... why) {
    LN_FAIL("[config] ", origin, ": ", k.key, " = ", v.to_toml(), " ", why...);
  };
  if (v.kind == TomlValue::Kind::Integer || v.kind == TomlValue::Kind::Float) {
    const double x = v.kind == TomlValue::Kind::Integer ? static_cast<double>(v.integer) : v.number;
    if (!std::isfinite(x)) fail("is not finite");
    if (k.min && x < *k.min) fail("is below the minimum ", format_number(*k.min));
    if (k.max && x > *k.max) fail("is above the maximum ", format_number(*k.max));
  }
  if (v.kind == TomlValue::Kind::String && !k.choices.empty() &&
      std::find(k.choices.begin(), k.choices.end(), v.string) == k.choices.end()) {
    fail("is not one of: ", join(k.choices, ", ", "\""));
  }
}

// Stores `v` into the key's field, converting integers to floats where a float is expected.
void assign(RunConfig& config, const ConfigKey& k, const TomlValue& v, const std::string& origin) {
  auto wrong_type = [&]() {
    const std::string type = k.type_name();
    LN_FAIL("[config] ", origin, ": ", k.key, " expects ", type[0] == 'i' ? "an " : "a ", type,
            ", got ", v.type_name(), " ", v.to_toml());
  };
  auto number = [&](const TomlValue& x) -> double {
    if (x.kind == TomlValue::Kind::Integer) return static_cast<double>(x.integer);
    if (x.kind != TomlValue::Kind::Float) wrong_type();
    return x.number;
  };
  auto array = [&]() -> const std::vector<TomlValue>& {
    if (v.kind != TomlValue::Kind::Array) wrong_type();
    for (const TomlValue& x : v.array) check_scalar(k, x, origin);
    return v.array;
  };
  if (v.kind != TomlValue::Kind::Array) check_scalar(k, v, origin);
  std::visit(
      [&](auto* field) {
        using T = std::remove_pointer_t<decltype(field)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          if (v.kind != TomlValue::Kind::Integer) wrong_type();
          *field = v.integer;
        } else if constexpr (std::is_same_v<T, double>) {
          *field = number(v);
        } else if constexpr (std::is_same_v<T, bool>) {
          if (v.kind != TomlValue::Kind::Bool) wrong_type();
          *field = v.boolean;
        } else if constexpr (std::is_same_v<T, std::string>) {
          if (v.kind != TomlValue::Kind::String) wrong_type();
          *field = v.string;
        } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          T out;
          for (const TomlValue& x : array()) {
            if (x.kind != TomlValue::Kind::Integer) wrong_type();
            out.push_back(x.integer);
          }
          *field = std::move(out);
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          T out;
          for (const TomlValue& x : array()) out.push_back(number(x));
          *field = std::move(out);
        } else {
          T out;
          for (const TomlValue& x : array()) {
            if (x.kind != TomlValue::Kind::String) wrong_type();
            out.push_back(x.string);
          }
          *field = std::move(out);
        }
      },
      k.field(config));
}

// The model preset's values for every key of [model] (the preset table lives with the models).
void apply_preset(RunConfig& c, const std::string& name) {
  if (name.empty()) return;
  const longnet::ModelConfig p = longnet::model_preset(name);
  c.model.preset = name;
  c.model.kind = p.kind;
  c.model.vocab_size = p.vocab_size;
  c.model.dim = p.dim;
  c.model.layers = p.layers;
  c.model.encoder_layers = p.encoder_layers;
  c.model.heads = p.heads;
  c.model.ffn_dim = p.ffn_dim;
  c.model.ffn_kind = p.ffn_kind;
  c.model.norm = p.norm;
  c.model.positions = p.positions;
  c.model.tie_weights = p.tie_weights;
  c.model.dropout = p.dropout;
  c.model.checkpoint_activations = p.checkpoint_activations;
}

// The key's field in a scratch config: its alternative tells the key's type.
ConfigField field_kind(const ConfigKey& k) {
  static RunConfig scratch;
  return k.field(scratch);
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

// A command-line value read as the key's type.
TomlValue value_from_text(const ConfigKey& k, const std::string& text, const std::string& origin) {
  const std::string t = trim(text);
  const bool quoted = !t.empty() && (t[0] == '"' || t[0] == '\'');
  try {
    return std::visit(
        [&](auto* field) -> TomlValue {
          using T = std::remove_pointer_t<decltype(field)>;
          if constexpr (std::is_same_v<T, std::string>) {
            return quoted ? io::parse_toml_value(t, origin) : TomlValue::of_string(text);
          } else if constexpr (std::is_same_v<T, bool>) {
            if (t == "1" || t == "yes" || t == "on") return TomlValue::of_bool(true);
            if (t == "0" || t == "no" || t == "off") return TomlValue::of_bool(false);
            return io::parse_toml_value(t, origin);
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            if (t.empty() || t[0] == '[') return io::parse_toml_value(t.empty() ? "[]" : t, origin);
            std::vector<TomlValue> items;
            std::stringstream parts(t);
            for (std::string item; std::getline(parts, item, ',');) items.push_back(TomlValue::of_string(trim(item)));
            return TomlValue::of_array(std::move(items));
          } else if constexpr (std::is_same_v<T, std::vector<int64_t>> || std::is_same_v<T, std::vector<double>>) {
            return io::parse_toml_value(!t.empty() && t[0] == '[' ? t : "[" + t + "]", origin);
          } else {
            return io::parse_toml_value(t, origin);
          }
        },
        field_kind(k));
  } catch (const Error& e) {
    LN_FAIL("[config] ", origin, ": cannot read '", text, "' as the ", k.type_name(), " ", k.key, " expects (",
            e.what(), ")");
  }
}

}  // namespace

std::string ConfigKey::type_name() const {
  return std::visit(
      [](auto* field) -> std::string {
        using T = std::remove_pointer_t<decltype(field)>;
        if constexpr (std::is_same_v<T, int64_t>) return "integer";
        if constexpr (std::is_same_v<T, double>) return "float";
        if constexpr (std::is_same_v<T, bool>) return "boolean";
        if constexpr (std::is_same_v<T, std::string>) return "string";
        if constexpr (std::is_same_v<T, std::vector<int64_t>>) return "integer list";
        if constexpr (std::is_same_v<T, std::vector<double>>) return "float list";
        return "string list";
      },
      field_kind(*this));
}

TomlValue ConfigKey::get(const RunConfig& config) const {
  // The accessor takes a mutable config; this only reads through it.
  return std::visit(
      [](auto* f) -> TomlValue {
        using T = std::remove_pointer_t<decltype(f)>;
        if constexpr (std::is_same_v<T, int64_t>) return TomlValue::of_integer(*f);
        if constexpr (std::is_same_v<T, double>) return TomlValue::of_float(*f);
        if constexpr (std::is_same_v<T, bool>) return TomlValue::of_bool(*f);
        if constexpr (std::is_same_v<T, std::string>) return TomlValue::of_string(*f);
        if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
          std::vector<TomlValue> items;
          for (int64_t x : *f) items.push_back(TomlValue::of_integer(x));
          return TomlValue::of_array(std::move(items));
        }
        if constexpr (std::is_same_v<T, std::vector<double>>) {
          std::vector<TomlValue> items;
          for (double x : *f) items.push_back(TomlValue::of_float(x));
          return TomlValue::of_array(std::move(items));
        }
        if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::vector<TomlValue> items;
          for (const std::string& x : *f) items.push_back(TomlValue::of_string(x));
          return TomlValue::of_array(std::move(items));
        }
      },
      field(const_cast<RunConfig&>(config)));
}

const std::vector<ConfigKey>& config_schema() {
  static const std::vector<ConfigKey> schema = make_schema();
  return schema;
}

const std::vector<std::string>& config_sections() {
  static const std::vector<std::string> sections = [] {
    std::vector<std::string> out;
    for (const ConfigKey& k : config_schema()) {
      const std::string s = k.key.substr(0, k.key.find('.'));
      if (out.empty() || out.back() != s) out.push_back(s);
    }
    return out;
  }();
  return sections;
}

const ConfigKey* find_config_key(const std::string& key) {
  for (const ConfigKey& k : config_schema()) {
    if (k.key == key) return &k;
  }
  return nullptr;
}

std::vector<ConfigAssignment> assignments_from_toml(const io::TomlDocument& doc) {
  std::vector<ConfigAssignment> out;
  for (const io::TomlEntry& e : doc.entries) out.push_back({e.key, e.value, doc.source + ":" + std::to_string(e.line)});
  return out;
}

std::vector<ConfigAssignment> assignments_from_args(const std::vector<std::string>& args) {
  std::vector<ConfigAssignment> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    LN_CHECK(arg.rfind("--", 0) == 0 && arg.size() > 2, "[config] unexpected argument '", arg,
             "' (overrides are written --section.key value)");
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    const std::string origin = "command line '--" + key + "'";
    const ConfigKey& k = require_key(key, origin);
    std::string text;
    if (eq != std::string::npos) {
      text = arg.substr(eq + 1);
    } else if (std::holds_alternative<bool*>(field_kind(k))) {
      // A boolean key alone is a flag; it takes the next argument only when that reads as one.
      static const std::vector<std::string> words{"true", "false", "1", "0", "yes", "no", "on", "off"};
      const bool next_is_bool = i + 1 < args.size() && std::count(words.begin(), words.end(), args[i + 1]);
      text = next_is_bool ? args[++i] : "true";
    } else {
      LN_CHECK(i + 1 < args.size(), "[config] ", origin, ": missing value (", k.type_name(), ")");
      text = args[++i];
    }
    out.push_back({key, value_from_text(k, text, origin), origin});
  }
  return out;
}

RunConfig build_config(const std::vector<ConfigAssignment>& assignments) {
  RunConfig config;
  for (const ConfigAssignment& a : assignments) require_key(a.key, a.origin);
  // The preset goes first so that explicit keys, wherever they are written, override it.
  for (auto it = assignments.rbegin(); it != assignments.rend(); ++it) {
    if (it->key != "model.preset") continue;
    assign(config, *find_config_key(it->key), it->value, it->origin);
    apply_preset(config, config.model.preset);
    break;
  }
  for (const ConfigAssignment& a : assignments) {
    if (a.key != "model.preset") assign(config, *find_config_key(a.key), a.value, a.origin);
  }
  validate(config);
  return config;
}

RunConfig load_config(const std::optional<std::filesystem::path>& file, const std::vector<std::string>& overrides) {
  std::vector<ConfigAssignment> all;
  if (file) all = assignments_from_toml(io::read_toml_file(*file));
  for (ConfigAssignment& a : assignments_from_args(overrides)) all.push_back(std::move(a));
  return build_config(all);
}

void validate(const RunConfig& c) {
  const auto& m = c.model;
  LN_CHECK(m.dim % m.heads == 0, "[config] model.heads (", m.heads, ") must divide model.dim (", m.dim, ")");
  if (m.positions != "none") {
    LN_CHECK((m.dim / m.heads) % 2 == 0, "[config] model.positions = \"", m.positions,
             "\" rotates pairs of channels: the head dim model.dim / model.heads = ", m.dim / m.heads, " must be even");
  }
  LN_CHECK(m.dropout < 1.0, "[config] model.dropout must be below 1, got ", m.dropout);
  if (m.kind == "encoder_decoder") {
    LN_CHECK(m.encoder_layers >= 1, "[config] model.kind = \"encoder_decoder\" needs model.encoder_layers >= 1");
  } else {
    LN_CHECK(m.encoder_layers == 0, "[config] model.encoder_layers (", m.encoder_layers,
             ") is for model.kind = \"encoder_decoder\"; this model is a decoder");
  }
  const auto& a = c.attention;
  if (a.kind == "dilated") {
    LN_CHECK(!a.segment_lengths.empty() && a.segment_lengths.size() == a.dilation_rates.size(),
             "[config] attention.segment_lengths (", a.segment_lengths.size(), " values) and attention.dilation_rates (",
             a.dilation_rates.size(), " values) must pair up, one rate per segment length");
    for (size_t i = 0; i < a.segment_lengths.size(); ++i) {
      LN_CHECK(a.dilation_rates[i] <= a.segment_lengths[i], "[config] attention.dilation_rates[", i, "] = ",
               a.dilation_rates[i], " exceeds its segment length ", a.segment_lengths[i]);
    }
  }
  LN_CHECK(a.sparsity < 1.0, "[config] attention.sparsity must be below 1 (some blocks must remain), got ", a.sparsity);
  const auto& o = c.optimizer;
  LN_CHECK(o.betas.size() == 2, "[config] optimizer.betas takes two values (beta1, beta2), got ", o.betas.size());
  LN_CHECK(o.betas[0] < 1.0 && o.betas[1] < 1.0, "[config] optimizer.betas must lie in [0, 1)");
  LN_CHECK(!o.nesterov || (o.name == "sgd" && o.momentum > 0.0),
           "[config] optimizer.nesterov needs optimizer.name = \"sgd\" and optimizer.momentum > 0");
  LN_CHECK(o.name == "sgd" || o.momentum == 0.0, "[config] optimizer.momentum is for sgd; ", o.name,
           " uses optimizer.betas");
  try {
    lr_schedule(c).validate();
  } catch (const Error& e) {
    LN_FAIL("[config] lr_scheduler (with optimizer.lr as the peak): ", e.what());
  }
  const auto& t = c.training;
  LN_CHECK(t.freeze_layers <= m.layers + m.encoder_layers, "[config] training.freeze_layers (", t.freeze_layers,
           ") exceeds the model's layers (", m.layers + m.encoder_layers, ")");
  LN_CHECK(c.data.task != "doc2text" || m.kind == "encoder_decoder",
           "[config] data.task = \"doc2text\" needs model.kind = \"encoder_decoder\"");
  LN_CHECK(c.data.task == "doc2text" || m.kind == "decoder", "[config] data.task = \"", c.data.task,
           "\" trains a decoder; model.kind = \"encoder_decoder\" goes with data.task = \"doc2text\"");
  const auto& p = c.parallelism;
  LN_CHECK(p.sequence_algorithm != "dilated" || p.sequence_parallel == 1 || a.kind == "dilated",
           "[config] parallelism.sequence_algorithm = \"dilated\" splits dilated attention; attention.kind is \"",
           a.kind, "\" (use \"ring\" or \"ulysses\")");
  LN_CHECK(!c.checkpoint.dir.empty(), "[config] checkpoint.dir (the run directory) must not be empty");
}

std::string format_config(const RunConfig& config, bool with_help) {
  std::string out;
  std::string section;
  for (const ConfigKey& k : config_schema()) {
    const size_t dot = k.key.find('.');
    const std::string s = k.key.substr(0, dot);
    if (s != section) {
      out += (section.empty() ? "" : "\n") + std::string("[") + s + "]\n";
      section = s;
    }
    if (with_help) out += "# " + k.help + "\n";
    out += io::format_toml_key(k.key.substr(dot + 1)) + " = " + k.get(config).to_toml() + "\n";
  }
  return out;
}

std::filesystem::path save_config(const RunConfig& config, const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const std::filesystem::path path = dir / "config.toml";
  const std::filesystem::path tmp = dir / ("config.toml.tmp-" + std::to_string(::getpid()));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    LN_CHECK(out.good(), "[config] cannot write '", tmp.string(), "'");
    out << "# Effective configuration of this run.\n" << format_config(config, /*with_help=*/true);
    out.flush();
    LN_CHECK(out.good(), "[config] error writing '", tmp.string(), "'");
  }
  std::filesystem::rename(tmp, path);
  return path;
}

std::string config_keys_markdown() {
  const RunConfig defaults;
  std::string out = "| Key | Type | Default | Allowed | Description |\n|---|---|---|---|---|\n";
  for (const ConfigKey& k : config_schema()) {
    std::string allowed;
    if (!k.choices.empty()) {
      std::vector<std::string> shown;
      for (const std::string& c : k.choices) shown.push_back(c.empty() ? "\"\"" : c);
      allowed = join(shown, ", ", "`");
    } else if (k.min && k.max) {
      allowed = "[" + format_number(*k.min) + ", " + format_number(*k.max) + "]";
    } else if (k.min) {
      allowed = "≥ " + format_number(*k.min);
    }
    out += "| `" + k.key + "` | " + k.type_name() + " | `" + k.get(defaults).to_toml() + "` | " + allowed + " | " +
           k.help + " |\n";
  }
  return out;
}

optim::OptimizerSpec optimizer_spec(const RunConfig& c) {
  optim::OptimizerSpec s;
  s.name = c.optimizer.name;
  s.lr = c.optimizer.lr;
  s.beta1 = c.optimizer.betas.at(0);
  s.beta2 = c.optimizer.betas.at(1);
  s.eps = c.optimizer.eps;
  s.momentum = c.optimizer.momentum;
  s.nesterov = c.optimizer.nesterov;
  s.master_weights = true;
  return s;
}

optim::LrSchedule lr_schedule(const RunConfig& c) {
  optim::LrSchedule s;
  s.name = c.lr_scheduler.name;
  s.lr = c.optimizer.lr;
  s.warmup_steps = c.lr_scheduler.warmup_steps;
  s.total_steps = c.lr_scheduler.total_steps > 0 ? c.lr_scheduler.total_steps : c.training.steps;
  s.min_lr = c.lr_scheduler.min_lr;
  s.power = c.lr_scheduler.power;
  return s;
}

RunConfig ConfigOptions::resolve(const CLI::App& sub) const {
  std::optional<std::filesystem::path> path;
  if (!file.empty()) path = file;
  return load_config(path, sub.remaining());
}

std::shared_ptr<ConfigOptions> add_config_options(CLI::App* sub) {
  auto opt = std::make_shared<ConfigOptions>();
  sub->add_option("--config", opt->file, "Run config (TOML); any key can be overridden as --section.key value");
  sub->allow_extras();
  return opt;
}

void register_config(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("config", "Print the effective run config of a file and overrides, or every key");
  auto cfg = add_config_options(sub);
  auto keys = std::make_shared<bool>(false);
  auto help = std::make_shared<bool>(false);
  auto save = std::make_shared<std::string>();
  sub->add_flag("--keys", *keys, "Print every config key (markdown table) instead");
  sub->add_flag("--comments", *help, "Print each key's description above it");
  sub->add_option("--save", *save, "Also write the effective config to DIR/config.toml");
  on_run(sub, [sub, cfg, keys, help, save] {
    if (*keys) {
      std::cout << config_keys_markdown();
      return 0;
    }
    const RunConfig config = cfg->resolve(*sub);
    std::cout << format_config(config, *help);
    if (!save->empty()) std::cerr << "saved " << save_config(config, *save).string() << "\n";
    return 0;
  });
}

}  // namespace longnet::tools
