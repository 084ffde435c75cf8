#pragma once
// How subcommands attach their action (kept out of commands.h so each command file stays small).
#include <functional>

#include <CLI/CLI.hpp>

namespace longnet::tools {

/// Runs `fn` when `sub` is the chosen (deepest) subcommand; its result is the exit code.
void on_run(const CLI::App* sub, std::function<int()> fn);

}  // namespace longnet::tools
