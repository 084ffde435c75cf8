#pragma once
// The NCCL backend: one process per GPU (device = local rank), collectives queued on a stream of
// their own that is ordered after the framework's compute stream at launch, and before it again at
// wait(). A watchdog thread polls ncclCommGetAsyncError and the age of every operation in flight;
// on an NCCL error, or an operation older than the timeout (a peer that died or hangs), it aborts
// the communicator (ncclCommAbort), so that blocked work returns and every later call throws
// with the reason instead of hanging. Built only with CUDA and NCCL; elsewhere
// make_nccl_communicator throws.
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "framework/dist/communicator.h"
#include "framework/dist/launch.h"

namespace longnet::dist {

/// Options of an NCCL communicator.
struct NcclOptions {
  /// An operation still in flight after this long aborts the group.
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  /// How often the watchdog looks.
  std::chrono::milliseconds poll{std::chrono::milliseconds(100)};
  /// Called from the watchdog thread after an abort, with the reason (for example to print it and
  /// end the process: a library never exits by itself).
  std::function<void(const std::string& reason)> on_abort;
  /// Rendezvous timeout for exchanging the unique id.
  std::chrono::milliseconds rendezvous_timeout{std::chrono::minutes(5)};
};

/// True when this build has the NCCL backend.
bool nccl_available();

/// The world communicator of this process: picks GPU `info.local_rank`, exchanges NCCL's unique
/// id through the rendezvous on info.master_addr:master_port, and initialises the group.
std::shared_ptr<Communicator> make_nccl_communicator(const LaunchInfo& info, const NcclOptions& options = {});

}  // namespace longnet::dist
