#include "tools/longnet/bench_torch.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>

namespace longnet::tools {

bool torch_available(const TorchScript& t, bool skip) {
  if (skip) {
    std::printf("pytorch: not run (--no-torch)\n\n");
    return false;
  }
  if (!std::ifstream(t.script).good()) {
    std::printf("pytorch: not available (no reference script at '%s'; run from the repository root or pass "
                "--torch-script)\n\n", t.script.c_str());
    return false;
  }
  const std::string probe = t.python + " -c 'import torch' > /dev/null 2>&1";
  if (std::system(probe.c_str()) != 0) {
    std::printf("pytorch: not available (`%s -c 'import torch'` failed)\n\n", t.python.c_str());
    return false;
  }
  return true;
}

std::string run_torch_script(const TorchScript& t, const std::string& args, const char* who) {
  const std::string cmd = t.python + " " + t.script + " " + args;
  std::fflush(stdout);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return {};
  std::string last, line;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe) != nullptr) {
    line += buf;
    if (!line.empty() && line.back() == '\n') {
      if (line[0] == '{') last = line;
      line.clear();
    }
  }
  if (!line.empty() && line[0] == '{') last = line;
  const int rc = pclose(pipe);
  if (rc != 0 || last.empty() || last.find("\"error\"") != std::string::npos) {
    std::fprintf(stderr, "%s: `%s` failed (status %d)%s%s", who, cmd.c_str(), rc, last.empty() ? "" : ": ",
                 last.empty() ? "\n" : last.c_str());
    return {};
  }
  return last;
}

std::optional<double> json_number(const std::string& line, const std::string& key) {
  const std::string tag = "\"" + key + "\":";
  const size_t at = line.find(tag);
  if (at == std::string::npos) return std::nullopt;
  const char* begin = line.c_str() + at + tag.size();
  char* end = nullptr;
  const double v = std::strtod(begin, &end);
  if (end == begin) return std::nullopt;
  return v;
}

}  // namespace longnet::tools
