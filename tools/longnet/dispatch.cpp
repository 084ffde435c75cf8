#include <functional>
#include <iostream>
#include <map>
#include <string>

#include "tools/longnet/commands.h"
#include "tools/longnet/registry.h"

namespace longnet::tools {

std::map<const CLI::App*, std::function<int()>>& command_table() {
  static std::map<const CLI::App*, std::function<int()>> table;
  return table;
}

void on_run(const CLI::App* sub, std::function<int()> fn) { command_table()[sub] = std::move(fn); }

int run_selected(CLI::App& app) {
  // The deepest chosen subcommand with a registered action runs.
  const CLI::App* current = &app;
  std::function<int()> action;
  while (true) {
    auto it = command_table().find(current);
    if (it != command_table().end()) action = it->second;
    auto subs = current->get_subcommands();
    if (subs.empty()) break;
    current = subs.front();
  }
  if (!action) {
    std::cerr << current->help();
    return 2;
  }
  return action();
}

}  // namespace longnet::tools
