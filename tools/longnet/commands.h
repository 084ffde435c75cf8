#pragma once
// Subcommands of the longnet program. Each register_* adds its subcommand and options to the app;
// run_selected runs whichever was chosen.
#include <CLI/CLI.hpp>

namespace longnet::tools {

/// `longnet bench ...`: performance tables.
void register_bench(CLI::App& app);
/// `longnet config`: prints the effective run config of a file and overrides, or every key.
void register_config(CLI::App& app);
/// `longnet report RUN_DIR`: an HTML page with the run's metric curves.
void register_report(CLI::App& app);
/// `longnet tokenizer train|encode|decode`: SentencePiece models.
void register_tokenizer(CLI::App& app);
/// `longnet prepare`: tokenise a corpus into HDF5 token stores.
void register_prepare(CLI::App& app);
/// `longnet inspect FILE`: describe a token store or a tokenizer model.
void register_inspect(CLI::App& app);
/// `longnet train` and `longnet finetune`: the training loop on a run config.
void register_train(CLI::App& app);
/// `longnet eval CHECKPOINT`: perplexity by length and the passkey grid.
void register_eval(CLI::App& app);
/// `longnet generate CHECKPOINT`: continue prompts, streaming.
void register_generate(CLI::App& app);
/// `longnet export CHECKPOINT`: safetensors weights and a config.json describing the model.
void register_export(CLI::App& app);
/// Runs the chosen subcommand; returns the process exit code.
int run_selected(CLI::App& app);

}  // namespace longnet::tools
