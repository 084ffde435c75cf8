// The profiler: exclusive time per scope name, on the CPU's clock and on the GPU's stream.
#include "framework/core/profiler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "framework/core/error.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/runtime.h"
#endif

namespace longnet {
namespace {

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

const ProfileEntry& entry(const std::vector<ProfileEntry>& entries, const std::string& name) {
  for (const ProfileEntry& e : entries) {
    if (e.name == name) return e;
  }
  throw Error("no entry named " + name);
}

TEST(Profiler, CpuScopesGetTheirExclusiveTime) {
  Profiler profiler(Device::cpu());
  sleep_ms(15);  // outside every scope
  {
    ProfileScope a("a");
    sleep_ms(30);
    {
      ProfileScope b("b");
      sleep_ms(20);
    }
    sleep_ms(10);
  }
  {
    ProfileScope b("b");
    sleep_ms(5);
  }
  const std::vector<ProfileEntry> got = profiler.finish();
  ASSERT_EQ(got.size(), 4u);
  // Sleeps last at least as asked, and a loaded machine may stretch them.
  // b inside a and b alone are two entries.
  const ProfileEntry &a = entry(got, "a"), &b = entry(got, "b"), &b_in_a = entry(got, "b in a");
  const ProfileEntry& out = entry(got, "(outside scopes)");
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(b.calls, 1);
  EXPECT_EQ(b_in_a.calls, 1);
  EXPECT_GE(a.ms, 40.0);
  EXPECT_LT(a.ms, 40.0 + 25.0);  // b's 20 ms are not a's
  EXPECT_GE(b_in_a.ms, 20.0);
  EXPECT_LT(b_in_a.ms, 20.0 + 25.0);
  EXPECT_GE(b.ms, 5.0);
  EXPECT_LT(b.ms, 5.0 + 25.0);
  EXPECT_GE(out.ms, 15.0);
  EXPECT_LT(out.ms, 15.0 + 25.0);
  EXPECT_EQ(got.front().name, "a");  // largest first
}

TEST(Profiler, ScopesWithoutAProfilerAndAfterFinishAreNotRecorded) {
  { ProfileScope idle("idle"); }  // no profiler: nothing happens
  Profiler profiler(Device::cpu());
  EXPECT_EQ(Profiler::active(), &profiler);
  EXPECT_THROW(Profiler second(Device::cpu()), Error);
  std::vector<ProfileEntry> got;
  {
    ProfileScope open_at_finish("late");
    got = profiler.finish();
  }  // closes after finish(): ignored
  EXPECT_EQ(Profiler::active(), nullptr);
  EXPECT_EQ(entry(got, "late").calls, 1);
  EXPECT_THROW(entry(got, "idle"), Error);
  EXPECT_THROW(profiler.finish(), Error);
}

TEST(Profiler, EachThreadHasItsOwn) {
  Profiler profiler(Device::cpu());
  std::thread other([] {
    EXPECT_EQ(Profiler::active(), nullptr);
    Profiler mine(Device::cpu());
    { ProfileScope s("other thread"); }
    EXPECT_EQ(entry(mine.finish(), "other thread").calls, 1);
  });
  other.join();
  const auto got = profiler.finish();
  EXPECT_THROW(entry(got, "other thread"), Error);
}

#ifdef LONGNET_WITH_CUDA
// The profile measures what the GPU did inside the scope, not how long the host took to queue it.
TEST(ProfilerCuda, ScopesTimeTheKernelsTheyQueued) {
  LN_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  const Tensor a = randn({4096, 4096}, DType::BF16, gpu);
  const Tensor b = randn({4096, 4096}, DType::BF16, gpu);
  const auto work = [&] {
    for (int i = 0; i < 8; ++i) (void)matmul(a, b);
  };
  work();  // warm-up: GEMM selection, pool growth
  cuda::synchronize(0);

  cuda::Events ev(2);
  LN_CUDA_CHECK(cudaEventRecord(ev[0], cuda::stream(0)));
  work();
  LN_CUDA_CHECK(cudaEventRecord(ev[1], cuda::stream(0)));
  LN_CUDA_CHECK(cudaEventSynchronize(ev[1]));
  float reference_ms = 0.0f;
  LN_CUDA_CHECK(cudaEventElapsedTime(&reference_ms, ev[0], ev[1]));

  Profiler profiler(gpu);
  const auto host_start = std::chrono::steady_clock::now();
  {
    ProfileScope s("gemms");
    work();
  }
  { ProfileScope s("small"); (void)add(a.narrow(0, 0, 16), 1.0); }
  const double host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host_start).count();
  const auto got = profiler.finish();
  const ProfileEntry& gemms = entry(got, "gemms");
  EXPECT_EQ(gemms.calls, 1);
  EXPECT_NEAR(gemms.ms, reference_ms, 0.25 * reference_ms);
  EXPECT_LT(entry(got, "small").ms, 0.1 * gemms.ms);
  // 8 GEMMs of 4096^3 take over a millisecond on any GPU this runs on; queueing them does not.
  EXPECT_GT(reference_ms, 1.0);
  EXPECT_LT(host_ms, gemms.ms) << "the host waited for the GPU: the profile would then time the host";
}
#endif

}  // namespace
}  // namespace longnet
