#pragma once
// Run configuration: a typed RunConfig (one struct per TOML section, defaults in the structs) and
// a schema table (key, type, range or allowed values, help) from which configs are read from TOML
// files, overridden on the command line (`--section.key value` or `--section.key=value`), checked
// (unknown keys get the closest known key as a hint; values are range-checked and cross-checked),
// printed, saved, and documented.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>

#include "framework/io/toml.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"

namespace longnet::tools {

/// [model]: the network.
struct ModelConfig {
  std::string preset;  // a named model (models/config.h) applied before explicit keys; "" for none
  std::string kind = "decoder";
  int64_t vocab_size = 32000;
  int64_t dim = 768;
  int64_t layers = 12;
  int64_t encoder_layers = 0;
  int64_t heads = 12;
  int64_t ffn_dim = 3072;
  std::string ffn_kind = "gelu";
  std::string norm = "sub_ln";
  std::string positions = "xpos";
  bool tie_weights = true;
  double dropout = 0.0;
  bool checkpoint_activations = false;
  int64_t checkpoint_layers = 0;
  std::string ffn_checkpoint = "activation";
  int64_t ffn_checkpoint_chunk = 65536;

  bool operator==(const ModelConfig&) const = default;
};

/// [attention]: the attention core and its parameters.
struct AttentionSection {
  std::string kind = "dilated";
  std::vector<int64_t> segment_lengths{2048, 4096, 8192, 16384, 32768};
  std::vector<int64_t> dilation_rates{1, 2, 4, 6, 12};
  int64_t block_size = 64;
  std::string pattern = "local";
  int64_t window = 1;
  int64_t pattern_dilation = 2;
  int64_t global_blocks = 1;
  int64_t random_blocks = 2;
  int64_t levels = 2;
  int64_t level_factor = 4;
  double sparsity = 0.9;
  int64_t scorer_dim = 16;
  double regularizer = 0.0;
  int64_t seed = 0;

  bool operator==(const AttentionSection&) const = default;
};

/// [optimizer]
struct OptimizerSection {
  std::string name = "adamw";
  double lr = 6e-4;
  std::vector<double> betas{0.9, 0.98};
  double eps = 1e-6;
  double weight_decay = 0.01;
  double momentum = 0.0;
  bool nesterov = false;
  double clip_grad_norm = 1.0;
  std::vector<std::string> no_decay{"bias", "norm", "embed"};

  bool operator==(const OptimizerSection&) const = default;
};

/// [lr_scheduler]
struct LrSchedulerSection {
  std::string name = "polynomial";
  int64_t warmup_steps = 0;
  double min_lr = 0.0;
  double power = 1.0;
  int64_t total_steps = 0;  // 0: training.steps

  bool operator==(const LrSchedulerSection&) const = default;
};

/// [training]
struct TrainingSection {
  int64_t steps = 1000;
  int64_t batch_size = 8;
  int64_t seq_len = 2048;
  int64_t grad_accum = 1;
  std::string dtype = "f32";
  std::string device = "auto";
  int64_t seed = 1;
  int64_t eval_every = 0;
  int64_t eval_batches = 8;
  int64_t log_every = 10;
  int64_t max_bad_steps = 10;
  std::string finetune_from;
  int64_t freeze_layers = 0;

  bool operator==(const TrainingSection&) const = default;
};

/// [data]
struct DataSection {
  std::string train;
  std::string valid;
  std::string tokenizer;
  bool document_aware = true;
  std::string task = "lm";
  int64_t target_len = 128;  // doc2text: target tokens (BOS, titles, EOS)

  bool operator==(const DataSection&) const = default;
};

/// [parallelism]
struct ParallelismSection {
  int64_t data_parallel = 0;  // 0: every rank the sequence-parallel groups leave
  int64_t sequence_parallel = 1;
  std::string sequence_algorithm = "dilated";
  int64_t nproc_per_node = 1;
  bool zero1 = false;        // shard the optimizer state over the ranks (ZeRO stage 1)
  double bucket_mb = 25.0;   // gradient all-reduce bucket size
  int64_t timeout_s = 600;   // a collective longer than this aborts the run (NCCL)

  bool operator==(const ParallelismSection&) const = default;
};

/// [checkpoint]
struct CheckpointSection {
  std::string dir = "runs/default";
  int64_t every = 1000;
  int64_t keep_last = 3;

  bool operator==(const CheckpointSection&) const = default;
};

/// [metrics]
struct MetricsSection {
  bool jsonl = true;
  bool tensorboard = true;
  bool report = true;

  bool operator==(const MetricsSection&) const = default;
};

/// [debug]
struct DebugSection {
  bool detect_anomaly = false;
  std::string log_level = "info";

  bool operator==(const DebugSection&) const = default;
};

/// Everything a run reads from its config.
struct RunConfig {
  ModelConfig model;
  AttentionSection attention;
  OptimizerSection optimizer;
  LrSchedulerSection lr_scheduler;
  TrainingSection training;
  DataSection data;
  ParallelismSection parallelism;
  CheckpointSection checkpoint;
  MetricsSection metrics;
  DebugSection debug;

  bool operator==(const RunConfig&) const = default;
};

/// A pointer to one field of a RunConfig; its alternative is the key's type.
using ConfigField = std::variant<int64_t*, double*, bool*, std::string*, std::vector<int64_t>*, std::vector<double>*,
                                 std::vector<std::string>*>;

/// One key of the schema.
struct ConfigKey {
  std::string key;                        // "section.name"
  ConfigField (*field)(RunConfig&);       // where the value lives
  std::string help;
  std::optional<double> min, max;         // numbers and each element of number lists
  std::vector<std::string> choices;       // strings and each element of string lists ("" allowed if listed)

  /// "integer", "float", "boolean", "string", "integer list", "float list", "string list".
  std::string type_name() const;
  /// The value in `config`, as TOML.
  io::TomlValue get(const RunConfig& config) const;
};

/// Every key, section by section, in the order configs are printed.
const std::vector<ConfigKey>& config_schema();
/// The section names, in order.
const std::vector<std::string>& config_sections();
/// The schema entry of `key`, or null.
const ConfigKey* find_config_key(const std::string& key);

/// One `key = value` to apply, with where it came from ("run.toml:12", "--training.steps").
struct ConfigAssignment {
  std::string key;
  io::TomlValue value;
  std::string origin;
};

/// The assignments of a parsed TOML file, in file order.
std::vector<ConfigAssignment> assignments_from_toml(const io::TomlDocument& doc);
/// The assignments of command-line arguments `--section.key value` and `--section.key=value`
/// (a boolean key alone means true). Values are read as the key's type: TOML literals, or bare
/// text for strings, and comma-separated lists with or without brackets.
std::vector<ConfigAssignment> assignments_from_args(const std::vector<std::string>& args);

/// Defaults, then the model preset named by the last `model.preset` assignment, then every
/// assignment in order; then validate(). Unknown keys, wrong types and out-of-range values throw
/// naming the origin (and the closest known key for an unknown one).
RunConfig build_config(const std::vector<ConfigAssignment>& assignments);
/// build_config over a file (optional) followed by command-line overrides.
RunConfig load_config(const std::optional<std::filesystem::path>& file, const std::vector<std::string>& overrides = {});
/// Cross-key checks (segment and dilation lists pair up, heads divide dim, the schedule is valid,
/// ...); throws naming the keys involved.
void validate(const RunConfig& config);

/// The config as TOML, every key, sections in schema order (with_help: a comment per key).
std::string format_config(const RunConfig& config, bool with_help = false);
/// Writes format_config to `dir`/config.toml (through a temporary file and a rename); returns the path.
std::filesystem::path save_config(const RunConfig& config, const std::filesystem::path& dir);
/// A markdown table of every key: type, default, allowed values, help.
std::string config_keys_markdown();

/// The optimizer the config describes (master weights when training.dtype is bf16).
optim::OptimizerSpec optimizer_spec(const RunConfig& config);
/// The learning-rate schedule the config describes (total_steps 0 becomes training.steps).
optim::LrSchedule lr_schedule(const RunConfig& config);

/// Options that read a run config on a subcommand: `--config FILE` plus any `--section.key value`
/// (the subcommand accepts extra arguments for them).
struct ConfigOptions {
  std::string file;
  /// The effective config once the subcommand's arguments are parsed.
  RunConfig resolve(const CLI::App& sub) const;
};

/// Adds `--config` to `sub` and lets it collect `--section.key value` overrides.
std::shared_ptr<ConfigOptions> add_config_options(CLI::App* sub);

}  // namespace longnet::tools
