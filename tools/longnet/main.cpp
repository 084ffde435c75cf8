// The longnet program: one binary, one subcommand per task.
#include <iostream>

#include <CLI/CLI.hpp>

#include "framework/core/error.h"
#include "tools/longnet/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"longnet: train and run LongNet transformers"};
  app.require_subcommand(1);
  longnet::tools::register_tokenizer(app);
  longnet::tools::register_prepare(app);
  longnet::tools::register_train(app);
  longnet::tools::register_eval(app);
  longnet::tools::register_generate(app);
  longnet::tools::register_export(app);
  longnet::tools::register_bench(app);
  longnet::tools::register_inspect(app);
  longnet::tools::register_config(app);
  longnet::tools::register_report(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return longnet::tools::run_selected(app);
  } catch (const longnet::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
