#pragma once
// Page-locked host buffers in which the loader assembles batches bound for a GPU, so that their
// upload is a true asynchronous copy. A slot is written again only after its last upload has
// completed. Builds without CUDA have none (constructing one throws).
#include <cstddef>
#include <memory>
#include <vector>

#include "framework/core/device.h"
#include "framework/core/tensor.h"

namespace longnet::data {

/// A fixed set of equally sized pinned buffers for one GPU.
class PinnedSlots {
 public:
  PinnedSlots(int count, size_t bytes, Device device);
  ~PinnedSlots();
  PinnedSlots(const PinnedSlots&) = delete;
  PinnedSlots& operator=(const PinnedSlots&) = delete;

  int count() const;
  /// Host memory of a slot.
  void* data(int slot) const;
  /// Blocks until the slot's last upload has finished reading it.
  void wait_reusable(int slot) const;
  /// Queues copies of consecutive pieces of the slot into the device tensors `dst` (contiguous,
  /// in order, on this slot set's device) on the device's stream, and marks the slot busy until
  /// they complete.
  void upload(int slot, const std::vector<Tensor>& dst) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace longnet::data
