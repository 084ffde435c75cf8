#include "tools/longnet/rank_launch.h"

#include <unistd.h>

#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "framework/core/error.h"
#include "framework/dist/nccl.h"

namespace longnet::tools {

std::vector<std::string> own_command_line(const std::string& drop) {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  for (size_t at = 0; at < all.size();) {
    const size_t end = all.find('\0', at);
    args.push_back(all.substr(at, end - at));
    at = end == std::string::npos ? all.size() : end + 1;
  }
  LN_CHECK(!args.empty(), "[launch] cannot read this process's command line from /proc/self/cmdline");
  std::vector<std::string> out{std::filesystem::read_symlink("/proc/self/exe").string()};
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == drop) {
      ++i;  // and its value
    } else if (args[i].rfind(drop + "=", 0) != 0) {
      out.push_back(args[i]);
    }
  }
  return out;
}

std::shared_ptr<dist::Communicator> make_rank_world(const dist::LaunchInfo& launch, std::chrono::seconds timeout,
                                                    const std::string& hint) {
  dist::NcclOptions o;
  o.timeout = timeout;
  const int rank = launch.rank;
  o.on_abort = [rank, hint](const std::string& reason) {
    std::fprintf(stderr, "[rank %d] stopping: %s%s\n", rank, reason.c_str(), hint.c_str());
    std::fflush(stderr);
    ::_exit(1);
  };
  return dist::make_nccl_communicator(launch, o);
}

int run_rank(int rank, int world_size, const std::function<int()>& body) {
  if (world_size <= 1) return body();
  try {
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] error: %s\n", rank, e.what());
    std::fflush(stderr);
    std::fflush(stdout);
    ::_exit(1);
  }
}

}  // namespace longnet::tools
