#pragma once
// The loader: batches of int64 tokens from a dataset, deterministic given a seed, sharded by
// data-parallel rank, prepared ahead on a background thread, and positioned by a small state that
// a checkpoint saves and restores exactly.
//
// Order: epoch e visits the dataset through a seeded permutation (a fresh one every epoch).
// Global batch b of the epoch takes the examples at permuted positions
// [(b * dp_size + r) * B, (b * dp_size + r + 1) * B) for data-parallel rank r; the last partial
// global batch of an epoch is dropped. Sequence-parallel ranks of one data-parallel group
// construct the loader with the same dp_rank and so receive identical batches; each takes its
// own slice of the sequence.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset.h"
#include "framework/core/device.h"
#include "framework/core/tensor.h"

namespace longnet::data {

class PinnedSlots;

/// One batch: a (B, length) int64 tensor per dataset field.
struct Batch {
  std::vector<std::string> names;
  std::vector<Tensor> fields;
  int64_t epoch = 0;  // where the batch came from
  int64_t index = 0;  // batch number within the epoch

  /// The field called `name`; throws if there is none.
  const Tensor& field(std::string_view name) const;
  /// The "tokens" field: (B, N + 1).
  const Tensor& tokens() const { return field("tokens"); }
  /// tokens[:, :-1], contiguous: (B, N).
  Tensor inputs() const;
  /// tokens[:, 1:], contiguous: (B, N).
  Tensor targets() const;
};

/// How to load.
struct LoaderOptions {
  int64_t batch_size = 1;           // examples per rank per step
  uint64_t seed = 0;
  int dp_rank = 0;
  int dp_size = 1;
  bool shuffle = true;              // permute each epoch (else dataset order)
  int prefetch = 2;                 // batches prepared ahead on a background thread; 0: none
  Device device = Device::cpu();    // where batches are delivered (GPU: staged in pinned memory)
};

/// The loader's position: the next batch next() returns, and what the position is relative to.
struct LoaderState {
  int64_t epoch = 0;
  int64_t batch = 0;          // within the epoch
  uint64_t seed = 0;
  int dp_rank = 0;
  int dp_size = 1;
  int64_t batch_size = 0;
  int64_t dataset_size = 0;
  bool shuffle = true;

  nlohmann::json to_json() const;
  /// Throws for missing or mistyped keys.
  static LoaderState from_json(const nlohmann::json& j);
  bool operator==(const LoaderState&) const = default;
};

/// Batches from a dataset. Not copyable; next() and the state calls belong to one thread.
class Loader {
 public:
  Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  /// The next batch; rethrows an error raised while preparing it.
  Batch next();
  /// Global batches per epoch: floor(dataset size / (batch_size * dp_size)).
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  /// Position of the batch next() returns next.
  LoaderState state() const;
  /// Continues from a saved position. Throws if it was saved by a loader with another seed,
  /// batch size, data-parallel layout, shuffle setting or dataset size.
  void load_state(const LoaderState& state);
  /// Dataset index of row `row` of batch `batch` in `epoch` on this rank.
  int64_t example_index(int64_t epoch, int64_t batch, int64_t row) const;

 private:
  struct Prepared;
  Prepared prepare(int64_t epoch, int64_t batch);
  Batch deliver(Prepared&& p);
  void start_worker();
  void stop_worker();
  void worker_loop(int64_t epoch, int64_t batch);

  std::shared_ptr<const Dataset> dataset_;
  LoaderOptions options_;
  std::vector<FieldSpec> fields_;
  int64_t batches_per_epoch_ = 0;
  int64_t epoch_ = 0, batch_ = 0;  // position of the next batch next() returns
  std::unique_ptr<PinnedSlots> pinned_;

  // Background preparation.
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Prepared> ready_;
  std::vector<int> free_slots_;
  std::exception_ptr error_;
  bool stop_ = false;
};

}  // namespace longnet::data
