#pragma once
// Starting the processes of a run and finding each other. Three ways in, one description out:
//   - launchers that set RANK, WORLD_SIZE, LOCAL_RANK (torchrun style), MASTER_ADDR, MASTER_PORT;
//   - mpirun (OpenMPI's OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK; without MASTER_ADDR the run is
//     taken to be on one node and rank 0 listens on the local host);
//   - Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID);
//   - the program itself on one node: spawn_local() re-runs a command once per rank with the
//     variables above set (`longnet train --nproc-per-node N`).
// The ranks then meet through a small TCP rendezvous on MASTER_ADDR:MASTER_PORT, over which rank 0
// hands out a payload (the NCCL unique id). One GPU per process: device = local rank.
#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace longnet::dist {

/// Where this process sits in the run.
struct LaunchInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// Which variables said so: "env", "openmpi", "slurm" or "none" (a single process).
  std::string source = "none";
};

/// Reads the launch variables through `getenv` (the process environment by default); the generic
/// RANK/WORLD_SIZE take precedence over OpenMPI's, which take precedence over Slurm's. Throws on
/// malformed or inconsistent values.
LaunchInfo launch_info_from_env(const std::function<const char*(const char*)>& getenv = nullptr);

/// Every rank calls this; rank 0 listens on master_addr:master_port, the others connect (retrying
/// until `timeout`), and all return rank 0's `payload` (the others' argument is ignored). Throws
/// naming the address when the rendezvous does not complete in time.
std::string rendezvous_broadcast(const LaunchInfo& info, const std::string& payload,
                                 std::chrono::milliseconds timeout = std::chrono::minutes(5));

/// Runs `argv` (argv[0] searched in PATH) `nproc` times on this node with RANK, WORLD_SIZE,
/// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and MASTER_PORT set, and waits. When one
/// exits non-zero (or is killed), the others' process groups are sent SIGTERM, then SIGKILL after `grace`; the
/// result is the first failure's exit status (128 + signal for a signal), or 0. SIGINT and SIGTERM
/// received while waiting are passed on to every rank's process group.
int spawn_local(int nproc, const std::vector<std::string>& argv, int master_port = 29500,
                std::chrono::milliseconds grace = std::chrono::seconds(10));

}  // namespace longnet::dist
