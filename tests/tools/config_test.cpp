// Run configs: every shipped config parses and validates, configs round-trip through their TOML
// form, command-line overrides in each accepted form, preset ordering, and the error messages for
// unknown keys (with the closest key), wrong types, out-of-range values and inconsistent keys.
#include "tools/longnet/config.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/core/error.h"

namespace longnet::tools {

// gtest prints a config that differs as its TOML.
void PrintTo(const RunConfig& c, std::ostream* os) { *os << "\n" << format_config(c); }

namespace {

namespace fs = std::filesystem;

const fs::path kConfigs = fs::path(__FILE__).parent_path().parent_path().parent_path() / "configs";

RunConfig from_text(const std::string& toml, const std::vector<std::string>& args = {}) {
  std::vector<ConfigAssignment> all = assignments_from_toml(io::parse_toml(toml, "run.toml"));
  for (ConfigAssignment& a : assignments_from_args(args)) all.push_back(a);
  return build_config(all);
}

std::string error_of(const std::string& toml, const std::vector<std::string>& args = {}) {
  try {
    from_text(toml, args);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR(toml, args, fragment)                                              \
  do {                                                                                  \
    const std::string msg_ = error_of(toml, args);                                      \
    EXPECT_NE(msg_.find(fragment), std::string::npos) << "message: '" << msg_ << "'";   \
  } while (0)

TEST(Config, EveryShippedConfigParsesValidatesAndRoundTrips) {
  ASSERT_TRUE(fs::is_directory(kConfigs)) << kConfigs;
  int count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(kConfigs)) {
    if (entry.path().extension() != ".toml") continue;
    ++count;
    SCOPED_TRACE(entry.path().string());
    RunConfig c;
    ASSERT_NO_THROW(c = load_config(entry.path()));
    // Printed and read back, the config is the same.
    EXPECT_EQ(from_text(format_config(c, /*with_help=*/true)), c);
  }
  // quickstart, two paper sizes, four attention kinds, three fine-tuning presets.
  EXPECT_GE(count, 10);
  for (const char* required : {"quickstart.toml", "longnet-125m.toml", "longnet-350m.toml", "attention/dense.toml",
                               "attention/dilated.toml", "attention/block_sparse.toml", "attention/adaptive.toml",
                               "finetune/long_document.toml", "finetune/passkey.toml", "finetune/doc2text.toml"}) {
    EXPECT_TRUE(fs::exists(kConfigs / required)) << required;
  }
}

TEST(Config, ShippedConfigsSayWhatTheyPromise) {
  const RunConfig q = load_config(kConfigs / "quickstart.toml");
  EXPECT_EQ(q.model.layers, 4);
  EXPECT_EQ(q.model.dim, 256);
  EXPECT_EQ(q.model.heads, 4);
  EXPECT_EQ(q.training.seq_len, 512);
  EXPECT_EQ(q.model.vocab_size, 2000);
  EXPECT_EQ(q.attention.segment_lengths, (std::vector<int64_t>{128, 256, 512}));
  EXPECT_EQ(q.attention.dilation_rates, (std::vector<int64_t>{1, 2, 4}));
  const RunConfig m125 = load_config(kConfigs / "longnet-125m.toml");
  EXPECT_EQ(m125.model.dim, 768);
  EXPECT_EQ(m125.model.layers, 12);
  EXPECT_EQ(m125.model.ffn_dim, 3072);
  const RunConfig m350 = load_config(kConfigs / "longnet-350m.toml");
  EXPECT_EQ(m350.model.dim, 1024);
  EXPECT_EQ(m350.model.layers, 24);
  for (const char* kind : {"dense", "dilated", "block_sparse", "adaptive"}) {
    EXPECT_EQ(load_config(kConfigs / "attention" / (std::string(kind) + ".toml")).attention.kind, kind);
  }
  EXPECT_EQ(load_config(kConfigs / "finetune/passkey.toml").data.task, "passkey");
  EXPECT_EQ(load_config(kConfigs / "finetune/doc2text.toml").model.kind, "encoder_decoder");
}

TEST(Config, DefaultsRoundTripAndEveryKeyIsPrinted) {
  const RunConfig d;
  const std::string text = format_config(d);
  EXPECT_EQ(from_text(text), d);
  const io::TomlDocument doc = io::parse_toml(text);
  EXPECT_EQ(doc.entries.size(), config_schema().size());
  for (const ConfigKey& k : config_schema()) EXPECT_NE(doc.find(k.key), nullptr) << k.key;
  EXPECT_EQ(config_sections(), (std::vector<std::string>{"model", "attention", "optimizer", "lr_scheduler", "training",
                                                         "data", "parallelism", "checkpoint", "metrics", "debug"}));
}

TEST(Config, KeysTheBriefAsksFor) {
  for (const char* key :
       {"model.preset", "model.kind", "model.vocab_size", "model.dim", "model.layers", "model.encoder_layers",
        "model.heads", "model.ffn_dim", "model.ffn_kind", "model.norm", "model.positions", "model.tie_weights",
        "model.dropout", "model.checkpoint_activations", "attention.kind", "attention.segment_lengths",
        "attention.dilation_rates", "attention.block_size", "attention.pattern", "attention.window",
        "attention.sparsity", "attention.seed", "optimizer.name", "optimizer.lr", "optimizer.betas", "optimizer.eps",
        "optimizer.weight_decay", "optimizer.momentum", "optimizer.clip_grad_norm", "lr_scheduler.name",
        "lr_scheduler.warmup_steps", "lr_scheduler.min_lr", "lr_scheduler.power", "lr_scheduler.total_steps",
        "training.steps", "training.batch_size", "training.seq_len", "training.grad_accum", "training.dtype",
        "training.device", "training.seed", "training.eval_every", "training.eval_batches", "training.log_every",
        "training.max_bad_steps", "training.finetune_from", "training.freeze_layers", "data.train", "data.valid",
        "data.tokenizer", "data.document_aware", "data.task", "parallelism.data_parallel",
        "parallelism.sequence_parallel", "parallelism.sequence_algorithm", "parallelism.nproc_per_node",
        "checkpoint.dir", "checkpoint.every", "checkpoint.keep_last", "metrics.jsonl", "metrics.tensorboard",
        "metrics.report", "debug.detect_anomaly", "debug.log_level"}) {
    EXPECT_NE(find_config_key(key), nullptr) << key;
  }
}

TEST(Config, CommandLineOverridesInEveryForm) {
  const RunConfig c = from_text("[training]\nsteps = 10\n[model]\ntie_weights = true\n",
                                {"--training.steps", "20", "--training.seq_len=4096", "--model.tie_weights", "false",
                                 "--model.checkpoint_activations", "--attention.segment_lengths", "64, 128",
                                 "--attention.dilation_rates=[1,2]", "--optimizer.betas", "0.8,0.95",
                                 "--optimizer.no_decay", "bias,ln", "--data.train", "my data.h5",
                                 "--checkpoint.dir='quoted dir'", "--metrics.report", "--debug.log_level", "debug"});
  EXPECT_EQ(c.training.steps, 20);  // later wins over the file
  EXPECT_EQ(c.training.seq_len, 4096);
  EXPECT_FALSE(c.model.tie_weights);
  EXPECT_TRUE(c.model.checkpoint_activations);  // a boolean key alone is a flag
  EXPECT_EQ(c.attention.segment_lengths, (std::vector<int64_t>{64, 128}));
  EXPECT_EQ(c.attention.dilation_rates, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(c.optimizer.betas, (std::vector<double>{0.8, 0.95}));
  EXPECT_EQ(c.optimizer.no_decay, (std::vector<std::string>{"bias", "ln"}));
  EXPECT_EQ(c.data.train, "my data.h5");
  EXPECT_EQ(c.checkpoint.dir, "quoted dir");
  EXPECT_TRUE(c.metrics.report);
  EXPECT_EQ(c.debug.log_level, "debug");
  // Integers are accepted for floats.
  EXPECT_DOUBLE_EQ(from_text("[optimizer]\nlr = 1\n").optimizer.lr, 1.0);
}

TEST(Config, PresetGoesFirstWhereverItIsWritten) {
  // dim before the preset in the file still overrides it.
  const RunConfig a = from_text("[model]\ndim = 1536\npreset = \"125m\"\n");
  EXPECT_EQ(a.model.dim, 1536);
  EXPECT_EQ(a.model.layers, 12);
  EXPECT_EQ(a.model.ffn_dim, 3072);
  // A preset on the command line replaces the file's preset; the file's explicit keys stay.
  const RunConfig b = from_text("[model]\npreset = \"125m\"\nlayers = 3\n", {"--model.preset", "350m"});
  EXPECT_EQ(b.model.preset, "350m");
  EXPECT_EQ(b.model.dim, 1024);
  EXPECT_EQ(b.model.heads, 16);
  EXPECT_EQ(b.model.layers, 3);
  // Every key of [model] comes from the preset: tiny_encoder_decoder is an encoder-decoder.
  const RunConfig e = from_text("[model]\npreset = \"tiny_encoder_decoder\"\n[data]\ntask = \"doc2text\"\n");
  EXPECT_EQ(e.model.kind, "encoder_decoder");
  EXPECT_GE(e.model.encoder_layers, 1);
}

TEST(Config, UnknownKeysNameTheClosestKey) {
  EXPECT_ERROR("[model]\ndim = 3\ndimm = 4\n", std::vector<std::string>{},
               "[config] run.toml:3: unknown key 'model.dimm' (did you mean 'model.dim'?)");
  EXPECT_ERROR("[modle]\nheads = 4\n", std::vector<std::string>{}, "unknown key 'modle.heads' (did you mean 'model.heads'?)");
  // A key in the wrong section.
  EXPECT_ERROR("[training]\nwarmup_steps = 4\n", std::vector<std::string>{},
               "unknown key 'training.warmup_steps' (did you mean 'lr_scheduler.warmup_steps'?)");
  EXPECT_ERROR("", (std::vector<std::string>{"--optimizer.weightdecay", "0.1"}),
               "[config] command line '--optimizer.weightdecay': unknown key 'optimizer.weightdecay' (did you mean "
               "'optimizer.weight_decay'?)");
  EXPECT_ERROR("", (std::vector<std::string>{"training.steps", "3"}), "unexpected argument 'training.steps'");
  EXPECT_ERROR("", (std::vector<std::string>{"--training.steps"}), "'--training.steps': missing value (integer)");
}

TEST(Config, WrongTypes) {
  EXPECT_ERROR("[training]\nsteps = 1e5\n", std::vector<std::string>{},
               "run.toml:2: training.steps expects an integer, got float 1e+05");
  EXPECT_ERROR("[model]\nkind = 3\n", std::vector<std::string>{}, "model.kind expects a string, got integer 3");
  EXPECT_ERROR("[model]\ntie_weights = \"yes\"\n", std::vector<std::string>{}, "model.tie_weights expects a boolean");
  EXPECT_ERROR("[attention]\nsegment_lengths = 128\n", std::vector<std::string>{},
               "attention.segment_lengths expects an integer list, got integer 128");
  EXPECT_ERROR("[attention]\nsegment_lengths = [128, 2.5]\n", std::vector<std::string>{},
               "attention.segment_lengths expects an integer list, got array [128.0, 2.5]");
  EXPECT_ERROR("", (std::vector<std::string>{"--training.steps", "many"}),
               "command line '--training.steps': cannot read 'many' as the integer training.steps expects");
  EXPECT_ERROR("", (std::vector<std::string>{"--model.tie_weights=maybe"}), "cannot read 'maybe' as the boolean");
}

TEST(Config, RangesAndChoices) {
  EXPECT_ERROR("[model]\ndim = 0\n", std::vector<std::string>{}, "run.toml:2: model.dim = 0 is below the minimum 1");
  EXPECT_ERROR("[model]\ndropout = 1.5\n", std::vector<std::string>{}, "model.dropout = 1.5 is above the maximum 1");
  EXPECT_ERROR("[model]\nkind = \"encoder\"\n", std::vector<std::string>{},
               "model.kind = \"encoder\" is not one of: \"decoder\", \"encoder_decoder\"");
  EXPECT_ERROR("[attention]\ndilation_rates = [1, 0]\n", std::vector<std::string>{},
               "attention.dilation_rates = 0 is below the minimum 1");
  EXPECT_ERROR("[optimizer]\nlr = nan\n", std::vector<std::string>{}, "optimizer.lr = nan is not finite");
  EXPECT_ERROR("", (std::vector<std::string>{"--training.device", "tpu"}), "training.device = \"tpu\" is not one of");
  EXPECT_ERROR("[model]\npreset = \"7b\"\n", std::vector<std::string>{}, "model.preset = \"7b\" is not one of");
}

TEST(Config, CrossKeyChecks) {
  EXPECT_ERROR("[model]\ndim = 100\nheads = 3\n", std::vector<std::string>{}, "model.heads (3) must divide model.dim (100)");
  EXPECT_ERROR("[model]\ndim = 96\nheads = 32\n", std::vector<std::string>{}, "head dim model.dim / model.heads = 3 must be even");
  EXPECT_ERROR("[attention]\nsegment_lengths = [8, 16]\ndilation_rates = [1]\n", std::vector<std::string>{},
               "attention.segment_lengths (2 values) and attention.dilation_rates (1 values) must pair up");
  EXPECT_ERROR("[attention]\nsegment_lengths = [8]\ndilation_rates = [16]\n", std::vector<std::string>{},
               "attention.dilation_rates[0] = 16 exceeds its segment length 8");
  EXPECT_ERROR("[model]\nkind = \"encoder_decoder\"\n[data]\ntask = \"doc2text\"\n", std::vector<std::string>{},
               "needs model.encoder_layers >= 1");
  EXPECT_ERROR("[model]\nencoder_layers = 2\n", std::vector<std::string>{}, "model.encoder_layers (2) is for model.kind");
  EXPECT_ERROR("[data]\ntask = \"doc2text\"\n", std::vector<std::string>{},
               "data.task = \"doc2text\" needs model.kind = \"encoder_decoder\"");
  EXPECT_ERROR("[optimizer]\nbetas = [0.9]\n", std::vector<std::string>{}, "optimizer.betas takes two values");
  EXPECT_ERROR("[optimizer]\nnesterov = true\n", std::vector<std::string>{}, "optimizer.nesterov needs optimizer.name = \"sgd\"");
  EXPECT_ERROR("[lr_scheduler]\nname = \"cosine\"\nwarmup_steps = 50\n[training]\nsteps = 40\n", std::vector<std::string>{},
               "[config] lr_scheduler (with optimizer.lr as the peak): [lr_schedule] 'cosine' decays until total_steps");
  EXPECT_ERROR("[lr_scheduler]\nmin_lr = 0.1\n", std::vector<std::string>{}, "min_lr must lie in [0, lr = 0.0006]");
  EXPECT_ERROR("[model]\nlayers = 2\n[training]\nfreeze_layers = 3\n", std::vector<std::string>{},
               "training.freeze_layers (3) exceeds the model's layers (2)");
  EXPECT_ERROR("[attention]\nkind = \"dense\"\n[parallelism]\nsequence_parallel = 2\n", std::vector<std::string>{},
               "sequence_algorithm = \"dilated\" splits dilated attention");
}

TEST(Config, ConversionsForTheOptimizerAndSchedule) {
  const RunConfig c = from_text(R"([optimizer]
name = "adam"
lr = 0.002
betas = [0.8, 0.9]
eps = 1e-7
[lr_scheduler]
name = "cosine"
warmup_steps = 5
min_lr = 0.0001
[training]
steps = 77
)");
  const optim::OptimizerSpec o = optimizer_spec(c);
  EXPECT_EQ(o.name, "adam");
  EXPECT_DOUBLE_EQ(o.lr, 0.002);
  EXPECT_DOUBLE_EQ(o.beta1, 0.8);
  EXPECT_DOUBLE_EQ(o.beta2, 0.9);
  EXPECT_DOUBLE_EQ(o.eps, 1e-7);
  const optim::LrSchedule s = lr_schedule(c);
  EXPECT_EQ(s.total_steps, 77);  // total_steps 0 follows training.steps
  EXPECT_DOUBLE_EQ(s.at(76), 0.0001);
  EXPECT_DOUBLE_EQ(s.at(4), 0.002);
}

TEST(Config, SaveWritesTheEffectiveConfig) {
  const fs::path dir = fs::temp_directory_path() / ("longnet-config-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const RunConfig c = from_text("[model]\ndim = 512\nheads = 8\n[data]\ntrain = \"a \\\"b\\\"\"\n");
  const fs::path path = save_config(c, dir / "run");
  EXPECT_EQ(path, dir / "run" / "config.toml");
  EXPECT_EQ(load_config(path), c);
  // No temporary file is left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir / "run")) ++files;
  EXPECT_EQ(files, 1);
  fs::remove_all(dir);
}

TEST(Config, KeyTableHasEveryKey) {
  const std::string md = config_keys_markdown();
  for (const ConfigKey& k : config_schema()) EXPECT_NE(md.find("| `" + k.key + "` |"), std::string::npos) << k.key;
  EXPECT_NE(md.find("| `model.dim` | integer | `768` | ≥ 1 |"), std::string::npos);
  EXPECT_NE(md.find("`sgd`, `adam`, `adamw`"), std::string::npos);
}

TEST(Config, ThroughCli11) {
  const fs::path file = fs::temp_directory_path() / ("longnet-cli-" + std::to_string(::getpid()) + ".toml");
  {
    std::ofstream(file) << "[training]\nsteps = 5\nbatch_size = 2\n";
  }
  CLI::App app{"test"};
  CLI::App* sub = app.add_subcommand("train", "train");
  const auto opt = add_config_options(sub);
  const std::string file_arg = file.string();
  const char* argv[] = {"longnet", "train", "--config", file_arg.c_str(), "--training.steps", "7",
                        "--model.dim=512", "--model.heads", "8", "--metrics.report", "false"};
  app.parse(static_cast<int>(std::size(argv)), argv);
  const RunConfig c = opt->resolve(*sub);
  EXPECT_EQ(c.training.steps, 7);
  EXPECT_EQ(c.training.batch_size, 2);
  EXPECT_EQ(c.model.dim, 512);
  EXPECT_EQ(c.model.heads, 8);
  EXPECT_FALSE(c.metrics.report);
  fs::remove(file);
}

}  // namespace
}  // namespace longnet::tools
