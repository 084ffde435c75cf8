#pragma once
// Runs `longnet` subcommands in the test process, through the same command-line code the binary
// runs, capturing what they print.
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <gtest/gtest.h>

#include "framework/core/error.h"
#include "tools/longnet/commands.h"

namespace longnet::tools::testing {

/// `longnet args...` (tokenizer, prepare, train, eval, generate, export) -> (exit code, stdout).
/// A longnet::Error prints "error: ..." and exits 1, as main() does.
inline std::pair<int, std::string> run_cli(const std::vector<std::string>& args) {
  CLI::App app{"longnet"};
  app.require_subcommand(1);
  register_tokenizer(app);
  register_prepare(app);
  register_train(app);
  register_eval(app);
  register_generate(app);
  register_export(app);
  std::vector<const char*> argv{"longnet"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  ::testing::internal::CaptureStdout();
  int code = 0;
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
    code = run_selected(app);
  } catch (const CLI::ParseError& e) {
    code = app.exit(e);
  } catch (const Error& e) {
    std::printf("error: %s\n", e.what());
    code = 1;
  }
  std::fflush(stdout);
  return {code, ::testing::internal::GetCapturedStdout()};
}

}  // namespace longnet::tools::testing
