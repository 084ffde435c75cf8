#include "tools/longnet/trainer_state.h"

#include <set>

#include "framework/core/error.h"
#include "framework/io/checkpoint_dir.h"
#include "framework/io/safetensors.h"
#include "tools/longnet/trainer_setup.h"

namespace longnet::tools {

namespace fs = std::filesystem;

namespace {

constexpr const char* kOptimizerTensors = "optimizer.safetensors";
constexpr const char* kOptimizerScalars = "optimizer.json";
constexpr const char* kTrainerState = "trainer_state.json";
constexpr int kTrainerStateVersion = 1;

template <class T>
T field(const nlohmann::json& j, const char* key) {
  LN_CHECK(j.contains(key), "[checkpoint] ", kTrainerState, " lacks '", key, "'");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    LN_FAIL("[checkpoint] ", kTrainerState, ": '", key, "' has the wrong type: ", j.at(key).dump());
  }
}

}  // namespace

nlohmann::json TrainerState::to_json() const {
  return {{"format_version", kTrainerStateVersion},
          {"step", step},
          {"rng", {{"seed", rng.seed}, {"offset", rng.offset}}},
          {"loader", loader},
          {"skipped_steps", skipped_steps},
          {"consecutive_bad", consecutive_bad},
          {"tokens_seen", tokens_seen},
          {"tokenizer_hash", tokenizer_hash}};
}

TrainerState TrainerState::from_json(const nlohmann::json& j) {
  LN_CHECK(j.is_object(), "[checkpoint] ", kTrainerState, " is not a JSON object");
  const int version = field<int>(j, "format_version");
  LN_CHECK(version == kTrainerStateVersion, "[checkpoint] ", kTrainerState, " has format version ", version,
           "; this program reads version ", kTrainerStateVersion);
  TrainerState s;
  s.step = field<int64_t>(j, "step");
  const nlohmann::json rng = field<nlohmann::json>(j, "rng");
  s.rng.seed = field<uint64_t>(rng, "seed");
  s.rng.offset = field<uint64_t>(rng, "offset");
  s.loader = field<nlohmann::json>(j, "loader");
  s.skipped_steps = field<int64_t>(j, "skipped_steps");
  s.consecutive_bad = field<int64_t>(j, "consecutive_bad");
  s.tokens_seen = field<int64_t>(j, "tokens_seen");
  s.tokenizer_hash = field<std::string>(j, "tokenizer_hash");
  return s;
}

fs::path save_training_checkpoint(const fs::path& run_dir, const CheckpointContents& c, const CheckpointFileHook& hook) {
  io::CheckpointWriter writer(run_dir, c.state.step);
  const auto written = [&](const char* name) {
    if (hook) hook(c.state.step, name);
  };
  io::save_safetensors(writer.file(kModelFile).string(), c.model.state_dict());
  written(kModelFile);
  writer.write_file(kModelConfigFile, longnet::to_json(c.model_config).dump(2));
  written(kModelConfigFile);
  io::save_safetensors(writer.file(kOptimizerTensors).string(), c.optimizer.tensors,
                       {{"format", "longnet-optimizer"}});
  written(kOptimizerTensors);
  writer.write_file(kOptimizerScalars, c.optimizer.scalars.dump(2));
  written(kOptimizerScalars);
  writer.write_file(kTrainerState, c.state.to_json().dump(2));
  written(kTrainerState);
  writer.write_file(kRunConfigFile, "# Run config of this checkpoint.\n" + format_config(c.config));
  written(kRunConfigFile);
  if (!c.tokenizer_path.empty()) {
    writer.write_file(kTokenizerFile, io::read_file_bytes(c.tokenizer_path));
    written(kTokenizerFile);
  }
  return writer.commit();
}

TrainerState load_training_checkpoint(const fs::path& dir, Module& model, optim::Optimizer& optimizer, Device device,
                                      bool sharded) {
  model.load_state_dict(io::load_safetensors((dir / kModelFile).string(), device));
  optim::OptimizerState opt;
  opt.tensors = io::load_safetensors((dir / kOptimizerTensors).string(), device);
  opt.scalars = nlohmann::json::parse(io::read_file_bytes(dir / kOptimizerScalars));
  if (sharded) {
    std::vector<std::string> names;
    for (const optim::ParamGroup& g : optimizer.groups()) names.insert(names.end(), g.names.begin(), g.names.end());
    opt = optimizer_state_subset(opt, names);
  }
  optimizer.load_state_dict(opt);
  return TrainerState::from_json(nlohmann::json::parse(io::read_file_bytes(dir / kTrainerState)));
}

optim::OptimizerState optimizer_state_subset(const optim::OptimizerState& state, const std::vector<std::string>& names) {
  const std::set<std::string> keep(names.begin(), names.end());
  optim::OptimizerState out;
  out.scalars = state.scalars;
  if (out.scalars.is_object() && out.scalars.contains("param_updates")) {
    nlohmann::json updates = nlohmann::json::object();
    for (const auto& [name, count] : state.scalars.at("param_updates").items()) {
      if (keep.count(name)) updates[name] = count;
    }
    out.scalars["param_updates"] = updates;
  }
  // State names ("exp_avg", "master", ...) have no dot; parameter names do.
  for (const auto& [key, t] : state.tensors) {
    const size_t dot = key.rfind('.');
    if (dot != std::string::npos && keep.count(key.substr(0, dot))) out.tensors.emplace(key, t);
  }
  return out;
}

}  // namespace longnet::tools
