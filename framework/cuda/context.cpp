#include "framework/cuda/context.h"

#include <array>
#include <memory>
#include <mutex>
#include <sstream>

#include "framework/cuda/check.h"
#include "framework/cuda/runtime.h"

namespace longnet::cuda {
namespace detail {

void fail(const char* library, const char* statement, const char* file, int line,
          const std::string& what) {
  std::ostringstream s;
  s << "[" << library << "] " << statement << " failed: " << what << " (" << file << ":" << line << ")";
  throw Error(s.str());
}

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}

}  // namespace detail

namespace {

constexpr int kMaxDevices = 16;
constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // cuBLASLt's recommendation for Hopper

// Everything a device needs, created together on first use and kept for the process lifetime
// (destroying CUDA objects at exit races the driver's own teardown).
struct DeviceState {
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  cudaDeviceProp props{};
  cudnnHandle_t dnn = nullptr;  // created on first use: cuDNN's start-up is slow and most runs skip it
  std::once_flag dnn_once;
};

DeviceState& state(int device) {
  static std::array<std::unique_ptr<DeviceState>, kMaxDevices> states;
  static std::array<std::once_flag, kMaxDevices> once;
  LN_CHECK(device >= 0 && device < kMaxDevices && device < device_count(), "[cuda] device ", device,
           " does not exist (", device_count(), " visible)");
  std::call_once(once[static_cast<size_t>(device)], [&] {
    DeviceGuard guard(device);
    auto s = std::make_unique<DeviceState>();
    LN_CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    LN_CUBLAS_CHECK(cublasLtCreate(&s->lt));
    LN_CUDA_CHECK(cudaMalloc(&s->workspace, kWorkspaceBytes));
    LN_CUDA_CHECK(cudaGetDeviceProperties(&s->props, device));
    // Freed blocks stay in the pool instead of returning to the driver at each synchronisation.
    cudaMemPool_t pool;
    LN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    LN_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    states[static_cast<size_t>(device)] = std::move(s);
  });
  return *states[static_cast<size_t>(device)];
}

class PoolAllocator final : public Allocator {
 public:
  explicit PoolAllocator(int device) : device_(device) {}
  void* allocate(size_t bytes) override {
    if (bytes == 0) return nullptr;
    DeviceGuard guard(device_);
    void* p = nullptr;
    const cudaError_t err = cudaMallocAsync(&p, bytes, stream(device_));
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the error so later calls are not poisoned
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      LN_FAIL("[alloc] out of memory on cuda:", device_, " allocating ", bytes, " bytes (",
              free_b >> 20, " MiB free of ", total_b >> 20, " MiB): ", cudaGetErrorString(err));
    }
    return p;
  }
  void deallocate(void* ptr, size_t) override {
    if (!ptr) return;
    DeviceGuard guard(device_);
    cudaFreeAsync(ptr, stream(device_));  // no throw from a destructor path
  }

 private:
  int device_;
};

}  // namespace

DeviceGuard::DeviceGuard(int device) {
  LN_CUDA_CHECK(cudaGetDevice(&prev_));
  if (prev_ != device) LN_CUDA_CHECK(cudaSetDevice(device));
}

DeviceGuard::~DeviceGuard() { cudaSetDevice(prev_); }

Events::Events(size_t n) : events_(n, nullptr) {
  for (cudaEvent_t& e : events_) LN_CUDA_CHECK(cudaEventCreate(&e));
}

Events::~Events() {
  for (cudaEvent_t e : events_) {
    if (e) cudaEventDestroy(e);
  }
}

int device_count() {
  static const int n = [] {
    int c = 0;
    if (cudaGetDeviceCount(&c) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return c;
  }();
  return n;
}

void synchronize(int device) { LN_CUDA_CHECK(cudaStreamSynchronize(stream(device))); }

cudaStream_t stream(int device) { return state(device).stream; }
cublasLtHandle_t cublaslt(int device) { return state(device).lt; }

cudnnHandle_t cudnn(int device) {
  DeviceState& s = state(device);
  std::call_once(s.dnn_once, [&] {
    DeviceGuard guard(device);
    LN_CUDNN_CHECK(cudnnCreate(&s.dnn));
    LN_CUDNN_CHECK(cudnnSetStream(s.dnn, s.stream));
  });
  return s.dnn;
}

void* cublaslt_workspace(int device, size_t* bytes) {
  *bytes = kWorkspaceBytes;
  return state(device).workspace;
}

const cudaDeviceProp& properties(int device) { return state(device).props; }

Allocator* pool_allocator(int device) {
  static std::array<std::unique_ptr<PoolAllocator>, kMaxDevices> allocators;
  static std::mutex mu;
  state(device);  // creates the stream and configures the pool
  std::lock_guard<std::mutex> lock(mu);
  auto& a = allocators[static_cast<size_t>(device)];
  if (!a) a = std::make_unique<PoolAllocator>(device);
  return a.get();
}

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes) LN_CUDA_CHECK(cudaMallocHost(&data_, bytes));
}

PinnedBuffer::~PinnedBuffer() {
  if (data_) cudaFreeHost(data_);
}

}  // namespace longnet::cuda
