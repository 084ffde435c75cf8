#pragma once
// The in-process backend: the ranks of a world are threads of one process and exchange CPU
// tensors through shared memory. Results are bitwise identical on every rank (reductions add the
// ranks' contributions in rank order), so distributed algorithms can be compared exactly with
// their single-process form. A rank that throws aborts the world: the others stop with an error
// naming it instead of waiting forever, and every wait is bounded by a timeout.
#include <chrono>
#include <functional>
#include <memory>
#include <vector>

#include "framework/dist/communicator.h"

namespace longnet::dist {

/// Options of an in-process world.
struct InProcessOptions {
  /// Longest wait for the other ranks in one operation before it throws.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

/// The communicators of a new world of `size` ranks, rank i at index i, each to be used by one
/// thread.
std::vector<std::shared_ptr<Communicator>> make_in_process_world(int size, const InProcessOptions& options = {});

/// Runs fn(comm) on `size` threads, one per rank, and returns when all have finished. If a rank
/// throws, the world is aborted (so the others stop) and the first error is rethrown, prefixed with
/// the rank that raised it.
void run_in_process(int size, const std::function<void(Communicator& comm)>& fn,
                    const InProcessOptions& options = {});

}  // namespace longnet::dist
