#include "tests/support/program.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace longnet::testing {

std::filesystem::path longnet_program() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() / "tools" / "longnet";
}

int run_longnet(const std::string& args, std::string& output) {
  // One log per call: tests of a binary may run in parallel processes, and calls in one process
  // must not read each other's output.
  static std::atomic<int> calls{0};
  const std::filesystem::path log = std::filesystem::temp_directory_path() /
                                    ("longnet_run_" + std::to_string(::getpid()) + "_" + std::to_string(calls++) + ".log");
  const int status = std::system((longnet_program().string() + " " + args + " > " + log.string() + " 2>&1").c_str());
  std::ifstream in(log);
  std::stringstream s;
  s << in.rdbuf();
  output = s.str();
  std::filesystem::remove(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace longnet::testing
