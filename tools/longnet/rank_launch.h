#pragma once
// What the commands that run as several processes (`train`, `bench dist`) share: re-running this
// program once per rank (--nproc-per-node), the NCCL world of a launched rank, and ending a rank
// that failed without tearing down a communicator its peers still wait on.
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "framework/dist/communicator.h"
#include "framework/dist/launch.h"

namespace longnet::tools {

/// This process's command line with argv[0] replaced by this program's path and `drop` (an option
/// such as "--nproc-per-node", in its "--opt VALUE" and "--opt=VALUE" forms) left out.
std::vector<std::string> own_command_line(const std::string& drop);

/// The NCCL world of a rank a launcher started. An operation that outlives `timeout` (a dead or
/// stuck peer) prints "[rank R] stopping: <reason><hint>" and ends the process with status 1.
std::shared_ptr<dist::Communicator> make_rank_world(const dist::LaunchInfo& launch, std::chrono::seconds timeout,
                                                    const std::string& hint = "");

/// Runs `body` as rank `rank` of `world_size`. With several ranks, an error escaping it is printed
/// as "[rank R] error: ..." and ends the process at once with status 1: destroying the NCCL
/// communicator would wait for peers that wait on this rank, while the launcher (mpirun,
/// --nproc-per-node) stops them once this process is gone.
int run_rank(int rank, int world_size, const std::function<int()>& body);

}  // namespace longnet::tools
