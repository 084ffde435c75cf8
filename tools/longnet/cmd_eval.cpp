// `longnet eval CHECKPOINT`: for a language model, perplexity by evaluation length (the LongNet
// paper's table: the training length and longer ones) and the passkey retrieval grid; for an
// encoder-decoder, the mean target loss (perplexity) on a doc2text store. Printed as markdown
// tables and saved as JSON.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "data/token_store.h"
#include "framework/core/error.h"
#include "data/tokenizer.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/registry.h"
#include "tools/longnet/trainer_eval.h"
#include "tools/longnet/trainer_setup.h"

namespace longnet::tools {
namespace {

namespace fs = std::filesystem;

struct EvalCli {
  std::string checkpoint;
  std::string data;               // default: the run's data.valid, else data.train
  std::vector<int64_t> lengths;   // default: 1, 4 and 16 times the training length
  int64_t windows = 8;
  int64_t batch_size = 1;
  bool passkey = false;
  std::vector<int64_t> passkey_lengths;  // default: lengths
  std::vector<double> depths{0.0, 0.25, 0.5, 0.75, 1.0};
  int samples = 2;
  uint64_t seed = 0;
  std::string out;  // default: <run dir>/eval-step-N.json
  std::string device = "auto";
  std::string dtype;
  std::set<std::string> given;  // the options on the command line
};

// Options that only language models take.
const std::vector<std::string> kLanguageModelOptions{"--lengths", "--passkey", "--passkey-lengths", "--depths",
                                                     "--samples", "--seed"};

// The encoder-decoder's evaluation: target loss over the store's examples, sources and targets cut
// or padded as in training.
nlohmann::json eval_encoder_decoder(const EvalCli& cli, const LoadedModel& m,
                                    const std::shared_ptr<const data::TokenStore>& store, const std::string& store_path) {
  std::string lm_only;
  for (const std::string& o : kLanguageModelOptions) {
    if (cli.given.count(o)) lm_only += (lm_only.empty() ? "" : ", ") + o;
  }
  LN_CHECK(lm_only.empty(), "[eval] options for decoder-only language models given (", lm_only, "); '",
           m.checkpoint.string(), "' holds an encoder_decoder model, evaluated by its target loss on a doc2text "
           "store (--data, --windows as the number of examples, --batch-size)");
  LN_CHECK(store->info().header.task == "doc2text", "[eval] '", m.checkpoint.string(),
           "' holds an encoder_decoder model, evaluated on a doc2text store (`longnet prepare --task doc2text`); ",
           store_path, " is a '", store->info().header.task, "' store: pass --data STORE");
  const RunConfig& rc = m.run_config;
  const int64_t examples = cli.given.count("--windows") ? cli.windows : store->num_documents();
  const LossEstimate e = evaluate_doc2text_loss(m.seq2seq("eval"), store, rc.training.seq_len, rc.data.target_len,
                                                cli.batch_size, examples);
  std::printf("Target loss of %lld doc2text examples (sources of %lld tokens, targets of up to %lld):\n\n%s\n",
              static_cast<long long>(e.windows), static_cast<long long>(rc.training.seq_len),
              static_cast<long long>(rc.data.target_len), format_loss_table({e}).c_str());
  return {{"kind", m.kind()},
          {"source_length", rc.training.seq_len},
          {"target_length", rc.data.target_len},
          {"target_loss", to_json(e)}};
}

// The language model's evaluation: perplexity by length and, when asked, the passkey grid.
nlohmann::json eval_language_model(const EvalCli& cli, const LoadedModel& m,
                                   const std::shared_ptr<const data::TokenStore>& store, const std::string& store_path) {
  const RunConfig& rc = m.run_config;
  const int64_t trained = rc.training.seq_len;
  std::vector<int64_t> lengths = cli.lengths;
  if (lengths.empty()) lengths = {trained, 4 * trained, 16 * trained};
  LongNetLM& model = m.lm("eval");
  nlohmann::json report = {{"kind", m.kind()},
                           {"trained_length", trained},
                           {"perplexity", nlohmann::json::array()},
                           {"skipped_lengths", nlohmann::json::array()}};
  std::vector<LossEstimate> rows;
  for (const int64_t n : lengths) {
    if (store->num_tokens() < n + 1) {
      std::printf("length %lld skipped: %s holds %lld tokens\n", static_cast<long long>(n), store_path.c_str(),
                  static_cast<long long>(store->num_tokens()));
      report["skipped_lengths"].push_back(n);
      continue;
    }
    rows.push_back(evaluate_loss(model, store, n, cli.batch_size, cli.windows));
    report["perplexity"].push_back(to_json(rows.back()));
  }
  std::printf("Perplexity by evaluation length (trained at %lld; up to %lld windows each):\n\n%s\n",
              static_cast<long long>(trained), static_cast<long long>(cli.windows), format_loss_table(rows).c_str());

  if (cli.passkey) {
    LN_CHECK(m.tokenizer.has_value(), "[eval] --passkey needs the tokenizer; the checkpoint ", m.checkpoint.string(),
             " has none");
    const data::PasskeyTask task(store, *m.tokenizer);
    std::vector<int64_t> pl = cli.passkey_lengths.empty() ? lengths : cli.passkey_lengths;
    std::erase_if(pl, [&](int64_t n) { return n < task.min_length(); });
    LN_CHECK(!pl.empty(), "[eval] every passkey length is below the shortest passkey prompt (", task.min_length(),
             " tokens)");
    const std::vector<PasskeyCell> cells = evaluate_passkey(model, task, pl, cli.depths, cli.samples, cli.seed);
    report["passkey"] = nlohmann::json::array();
    for (const PasskeyCell& c : cells) report["passkey"].push_back(to_json(c));
    std::printf("Passkey retrieval accuracy (%d samples per cell, greedy):\n\n%s\n", cli.samples,
                format_passkey_table(cells).c_str());
  }
  return report;
}

int run_eval(const EvalCli& cli) {
  const Device device = resolve_device(cli.device);
  LoadedModel m = load_model(cli.checkpoint, device, cli.dtype);
  const RunConfig& rc = m.run_config;
  const std::string store_path = !cli.data.empty() ? cli.data : !rc.data.valid.empty() ? rc.data.valid : rc.data.train;
  LN_CHECK(!store_path.empty(), "[eval] no token store: pass --data STORE (the run names neither data.valid nor data.train)");
  const auto store = data::TokenStore::open(store_path);
  if (m.tokenizer) store->require_tokenizer(*m.tokenizer);
  std::printf("## %s (step %lld), %s, %s\n\n", m.checkpoint.string().c_str(), static_cast<long long>(m.step),
              store_path.c_str(), device.str().c_str());
  nlohmann::json report = {{"checkpoint", m.checkpoint.string()}, {"step", m.step}, {"data", store_path}};
  if (m.is_encoder_decoder()) {
    report.update(eval_encoder_decoder(cli, m, store, store_path));
  } else {
    report.update(eval_language_model(cli, m, store, store_path));
  }
  const fs::path out =
      !cli.out.empty() ? fs::path(cli.out) : m.checkpoint.parent_path() / ("eval-step-" + std::to_string(m.step) + ".json");
  data::write_file_atomic(out.string(), report.dump(2) + "\n");
  std::printf("[eval] results saved to %s\n", out.string().c_str());
  return 0;
}

}  // namespace

void register_eval(CLI::App& app) {
  auto cli = std::make_shared<EvalCli>();
  CLI::App* sub = app.add_subcommand("eval", "Perplexity by evaluation length and the passkey grid of a trained model; an encoder-decoder's "
                                             "target loss on a doc2text store");
  sub->add_option("checkpoint", cli->checkpoint, "Run directory (its newest valid checkpoint) or step-N/ checkpoint")
      ->required();
  sub->add_option("--data", cli->data, "Token store to score (default: the run's data.valid, else data.train)");
  sub->add_option("--lengths", cli->lengths, "Evaluation lengths (default: 1, 4 and 16 times the training length)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  sub->add_option("--windows", cli->windows, "Windows scored per length (at most); encoder-decoders: doc2text examples (default: all)")->check(CLI::PositiveNumber);
  sub->add_option("--batch-size", cli->batch_size, "Windows (or doc2text examples) per forward pass")->check(CLI::PositiveNumber);
  sub->add_flag("--passkey", cli->passkey, "Also run the passkey retrieval grid (length x depth)");
  sub->add_option("--passkey-lengths", cli->passkey_lengths, "Passkey prompt lengths (default: --lengths)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  sub->add_option("--depths", cli->depths, "Passkey depths in [0, 1]")->delimiter(',')->check(CLI::Range(0.0, 1.0));
  sub->add_option("--samples", cli->samples, "Passkey prompts per (length, depth) cell")->check(CLI::PositiveNumber);
  sub->add_option("--seed", cli->seed, "Seed of the passkeys and their filler");
  sub->add_option("--out", cli->out, "JSON results file (default: RUN_DIR/eval-step-N.json)");
  sub->add_option("--device", cli->device, "auto, cpu or cuda[:N]");
  sub->add_option("--dtype", cli->dtype, "Compute dtype f32 or bf16 (default: the run's)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  on_run(sub, [cli, sub] {
    for (const CLI::Option* o : sub->get_options()) {
      if (o->count() > 0) cli->given.insert(o->get_name());
    }
    return run_eval(*cli);
  });
}

}  // namespace longnet::tools
