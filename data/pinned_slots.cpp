#include "data/pinned_slots.h"

#include "framework/core/error.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/runtime.h"
#endif

namespace longnet::data {

#ifdef LONGNET_WITH_CUDA

struct PinnedSlots::Impl {
  Device device;
  std::vector<std::unique_ptr<cuda::PinnedBuffer>> buffers;
  std::unique_ptr<cuda::Events> done;  // recorded after each slot's upload
};

PinnedSlots::PinnedSlots(int count, size_t bytes, Device device) : impl_(std::make_unique<Impl>()) {
  LN_CHECK(device.is_cuda(), "[PinnedSlots] pinned staging is for GPU batches, not ", device.str());
  impl_->device = device;
  for (int i = 0; i < count; ++i) impl_->buffers.push_back(std::make_unique<cuda::PinnedBuffer>(bytes));
  cuda::DeviceGuard guard(device.index);
  impl_->done = std::make_unique<cuda::Events>(static_cast<size_t>(count));
}

PinnedSlots::~PinnedSlots() {
  // Uploads still in flight read the buffers: let them finish before the memory is freed.
  for (int i = 0; i < count(); ++i) cudaEventSynchronize((*impl_->done)[i]);
}

int PinnedSlots::count() const { return static_cast<int>(impl_->buffers.size()); }

void* PinnedSlots::data(int slot) const { return impl_->buffers[slot]->data(); }

void PinnedSlots::wait_reusable(int slot) const {
  // An event never recorded counts as complete.
  LN_CUDA_CHECK(cudaEventSynchronize((*impl_->done)[slot]));
}

void PinnedSlots::upload(int slot, const std::vector<Tensor>& dst) const {
  const int dev = impl_->device.index;
  cuda::DeviceGuard guard(dev);
  const cudaStream_t stream = cuda::stream(dev);
  auto* src = static_cast<const char*>(data(slot));
  for (const Tensor& t : dst) {
    const size_t bytes = static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
    LN_CUDA_CHECK(cudaMemcpyAsync(t.raw_data(), src, bytes, cudaMemcpyHostToDevice, stream));
    src += bytes;
  }
  LN_CUDA_CHECK(cudaEventRecord((*impl_->done)[slot], stream));
}

#else

struct PinnedSlots::Impl {};

PinnedSlots::PinnedSlots(int, size_t, Device device) {
  LN_FAIL("[PinnedSlots] batches for ", device.str(),
          " need a build with the CUDA backend (configure with -DLONGNET_CUDA=ON)");
}

PinnedSlots::~PinnedSlots() = default;
int PinnedSlots::count() const { return 0; }
void* PinnedSlots::data(int) const { return nullptr; }
void PinnedSlots::wait_reusable(int) const {}
void PinnedSlots::upload(int, const std::vector<Tensor>&) const {}

#endif

}  // namespace longnet::data
