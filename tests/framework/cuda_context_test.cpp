// The CUDA runtime layer: memory accounting of the stream-ordered pool, pinned host buffers,
// library handles, and checked-call errors.
#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/runtime.h"
#endif

namespace longnet {
namespace {

TEST(CudaContext, PoolAllocationsAreCountedCurrentAndPeak) {
  LN_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  const int64_t before = memory_stats(gpu).current_bytes;
  reset_peak_memory(gpu);
  {
    Tensor a = Tensor::empty({1 << 20}, DType::F32, gpu);
    Tensor b = Tensor::empty({1 << 18}, DType::BF16, gpu);
    EXPECT_EQ(memory_stats(gpu).current_bytes - before, (4 << 20) + (2 << 18));
  }
  EXPECT_EQ(memory_stats(gpu).current_bytes, before);
  EXPECT_EQ(memory_stats(gpu).peak_bytes - before, (4 << 20) + (2 << 18));
}

TEST(CudaContext, OutOfMemoryIsAnErrorNotACrash) {
  LN_REQUIRE_GPU();
  try {
    Tensor huge = Tensor::empty({int64_t{1} << 46}, DType::F32, Device::cuda(0));
    FAIL() << "allocated 256 TiB";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[alloc] out of memory on cuda:0"), std::string::npos) << e.what();
  }
  // The device stays usable afterwards.
  EXPECT_EQ(ones({3}, DType::F32, Device::cuda(0)).to(Device::cpu()).to_vector<float>(),
            (std::vector<float>{1, 1, 1}));
}

#ifdef LONGNET_WITH_CUDA
TEST(CudaContext, HandlesPinnedMemoryAndCheckedCalls) {
  LN_REQUIRE_GPU();
  EXPECT_GE(cudnnGetVersion(), 90000u);
  EXPECT_NE(cuda::cudnn(0), nullptr);
  EXPECT_NE(cuda::cublaslt(0), nullptr);
  cuda::PinnedBuffer pinned(1 << 20);
  Tensor src = arange(0, 1 << 18, 1, DType::F32);
  std::memcpy(pinned.data(), src.raw_data(), 1 << 20);
  Tensor dst = Tensor::empty({1 << 18}, DType::F32, Device::cuda(0));
  LN_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), pinned.data(), 1 << 20, cudaMemcpyHostToDevice, cuda::stream(0)));
  EXPECT_EQ(dst.to(Device::cpu()).to_vector<float>(), src.to_vector<float>());
  try {
    LN_CUDA_CHECK(cudaSetDevice(1 << 20));
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("[CUDA] cudaSetDevice(1 << 20) failed"), std::string::npos) << msg;
  }
}
#endif

}  // namespace
}  // namespace longnet

namespace longnet {
namespace {

TEST(CudaContext, DefaultDeviceMovesFactoriesToTheGpu) {
  LN_REQUIRE_GPU();
  {
    DefaultDeviceGuard guard(Device::cuda(0));
    const Tensor w = randn({4, 3}), x = ones({2, 4});
    EXPECT_TRUE(w.device().is_cuda());
    const Tensor y = matmul(x, w);  // same model code, on the GPU
    EXPECT_TRUE(y.device().is_cuda());
    EXPECT_EQ(y.shape(), (Shape{2, 3}));
  }
  EXPECT_TRUE(zeros({1}).device().is_cpu());
}

}  // namespace
}  // namespace longnet
