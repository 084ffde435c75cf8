#pragma once
// Running the project's PyTorch reference scripts (bench/pytorch/*.py) from a benchmark: whether
// they can run here, running one, and reading the one-line JSON results they print.
#include <optional>
#include <string>

namespace longnet::tools {

/// The interpreter and script of a PyTorch reference.
struct TorchScript {
  std::string python = "python3";
  std::string script;
};

/// Whether the script can run: not skipped (`skip`, from --no-torch), the script is there and the
/// interpreter imports torch. Prints the reason on stdout ("pytorch: not run (...)") when not.
bool torch_available(const TorchScript& t, bool skip);

/// Runs the script with `args` (a shell-quoted string); its last JSON line, or empty when it failed
/// (non-zero exit, no JSON line, or a line with an "error" key; the failure goes to stderr, naming
/// `who`, and the script's own stderr shows).
std::string run_torch_script(const TorchScript& t, const std::string& args, const char* who);

/// The number after "key": in a one-line JSON object, if present.
std::optional<double> json_number(const std::string& line, const std::string& key);

}  // namespace longnet::tools
