#pragma once
// The longnet program of the build tree the test binary belongs to, run as a user would.
#include <filesystem>
#include <string>

namespace longnet::testing {

/// build/tools/longnet next to this build's tests/ folder.
std::filesystem::path longnet_program();

/// Runs longnet with `args` (a shell-quoted string); returns its exit code (-1 when it did not
/// exit normally) and fills `output` with its stdout and stderr.
int run_longnet(const std::string& args, std::string& output);

}  // namespace longnet::testing
