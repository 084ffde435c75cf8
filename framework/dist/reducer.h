#pragma once
// Data parallelism: every rank runs the same model on its part of the batch, and the gradients
// are averaged over the ranks before the optimizer step. GradientReducer overlaps that with
// backward: parameters are packed into buckets (in reverse order of registration, roughly the
// order backward produces their gradients); a bucket's all-reduce is launched from the leaves'
// gradient-ready hooks as soon as all its gradients exist, in bucket order on every rank, while
// backward goes on with the earlier layers. finish() waits and writes the averages back.
//
// ParameterSharding is ZeRO stage 1: each parameter has one owner rank, which alone keeps its
// optimizer state and updates it; the updated values are then broadcast from the owners.
#include <memory>
#include <vector>

#include "framework/dist/communicator.h"

namespace longnet::dist {

/// Options of a GradientReducer.
struct ReducerOptions {
  /// Bucket capacity; a parameter larger than this gets a bucket of its own.
  size_t bucket_bytes = size_t{25} << 20;
  /// Avg for losses that are means over each rank's (equal) share of the batch.
  ReduceOp op = ReduceOp::Avg;
};

/// Averages the gradients of `params` over `comm` during backward. One backward per finish(); to
/// accumulate several (gradient accumulation), turn syncing off for all but the last of them.
/// Every rank must use the same parameters in the same order.
class GradientReducer {
 public:
  GradientReducer(Communicator& comm, std::vector<Tensor> params, ReducerOptions options = {});
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// While off, backward only accumulates gradients locally (the earlier micro-batches of an
  /// update); on (the default) before the last backward, whose hooks launch the buckets.
  void set_sync(bool on);
  /// Launches what backward left (parameters that got no gradient contribute zeros), waits for
  /// every bucket and makes each gradient its average: a view of the bucket, which the next
  /// synced backward refills (keep a clone to hold it longer). Call after backward, before the step.
  /// Throws when a gradient grew after its bucket had been launched (a second synced backward).
  void finish();
  /// Buckets, as lists of indices into the parameter list (for inspection and tests).
  std::vector<std::vector<size_t>> buckets() const;
  /// Buckets launched from gradient hooks during the last backward (the rest waited for finish()).
  int launched_during_backward() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

/// ZeRO-1 partition of parameters over the ranks of `comm`: each parameter's owner is chosen so
/// that ranks own about the same number of elements (largest first, to the least loaded rank).
class ParameterSharding {
 public:
  ParameterSharding(Communicator& comm, std::vector<Tensor> params);
  /// The owner rank of parameter i.
  int owner(size_t i) const { return owners_[i]; }
  /// The parameters this rank owns (build the optimizer over these only).
  std::vector<Tensor> owned() const;
  /// Indices of the owned parameters.
  std::vector<size_t> owned_indices() const;
  /// After the owners' optimizer step: every rank receives every parameter from its owner.
  void sync_parameters();

 private:
  Communicator& comm_;
  std::vector<Tensor> params_;
  std::vector<int> owners_;
};

}  // namespace longnet::dist
