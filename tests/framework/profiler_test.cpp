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
  // The test keeps its own clock just outside each scope boundary, so each of its intervals holds
  // the profiler's with only the scope's own bookkeeping between them, however long a loaded
  // machine stretches the sleeps.
  using Clock = std::chrono::steady_clock;
  const auto ms_between = [](Clock::time_point x, Clock::time_point y) {
    return std::chrono::duration<double, std::milli>(y - x).count();
  };
  const Clock::time_point start = Clock::now();
  Profiler profiler(Device::cpu());
  sleep_ms(15);  // outside every scope
  Clock::time_point a0, a1, b0, b1, c0, c1;
  {
    a0 = Clock::now();
    ProfileScope a("a");
    sleep_ms(30);
    {
      b0 = Clock::now();
      ProfileScope b("b");
      sleep_ms(20);
    }
    b1 = Clock::now();
    sleep_ms(10);
  }
  a1 = Clock::now();
  {
    c0 = Clock::now();
    ProfileScope b("b");
    sleep_ms(5);
  }
  c1 = Clock::now();
  const std::vector<ProfileEntry> got = profiler.finish();
  const double total = ms_between(start, Clock::now());
  ASSERT_EQ(got.size(), 4u);
  // b inside a and b alone are two entries.
  const ProfileEntry &a = entry(got, "a"), &b = entry(got, "b"), &b_in_a = entry(got, "b in a");
  const ProfileEntry& out = entry(got, "(outside scopes)");
  EXPECT_EQ(a.calls, 1);
  EXPECT_EQ(b.calls, 1);
  EXPECT_EQ(b_in_a.calls, 1);
  // ms of bookkeeping around a boundary: far more than it takes, room for a loaded machine to
  // preempt the thread there, and well under the 20 ms that b would add to a if counted twice.
  constexpr double kSlack = 3.0;
  const double inner = ms_between(b0, b1);
  EXPECT_GE(b_in_a.ms, 20.0);
  EXPECT_NEAR(b_in_a.ms, inner, kSlack);
  EXPECT_GE(a.ms, 40.0);
  EXPECT_NEAR(a.ms, ms_between(a0, a1) - inner, 2 * kSlack);  // b's time is not a's
  EXPECT_GE(b.ms, 5.0);
  EXPECT_NEAR(b.ms, ms_between(c0, c1), kSlack);
  EXPECT_GE(out.ms, 15.0);
  double sum = 0.0;
  for (const ProfileEntry& e : got) sum += e.ms;
  EXPECT_LE(sum, total);  // every interval counted once
  EXPECT_GT(sum, total - 3 * kSlack);
  for (size_t i = 1; i < got.size(); ++i) EXPECT_GE(got[i - 1].ms, got[i].ms) << "largest first";
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

// A scope's time with the scopes nested in it ("inner in outer"), which the entries report apart.
double inclusive_ms(const std::vector<ProfileEntry>& entries, const std::string& name) {
  double ms = 0.0;
  const std::string nested = " in " + name;
  for (const ProfileEntry& e : entries) {
    if (e.name == name || (e.name.size() > nested.size() && e.name.ends_with(nested))) ms += e.ms;
  }
  return ms;
}

// The profile measures what the GPU did inside the scope, not how long the host took to queue it.
TEST(ProfilerCuda, ScopesTimeTheKernelsTheyQueued) {
  LN_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  const Tensor a = randn({4096, 4096}, DType::BF16, gpu);
  const Tensor b = randn({4096, 4096}, DType::BF16, gpu);
  const auto work = [&] {
    for (int i = 0; i < 8; ++i) (void)matmul(a, b);
  };
  const auto small = [&] { (void)add(a.narrow(0, 0, 16), 1.0); };
  // Warm-up: GEMM selection, pool growth, and the kernels' first launches (a lazily loaded
  // module blocks the host on its first launch, which a scope would then time).
  work();
  small();
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
  {
    ProfileScope s("small");
    small();
  }
  const double host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - host_start).count();
  const auto got = profiler.finish();
  EXPECT_EQ(entry(got, "gemms").calls, 1);
  // matmul opens its own "gemm" scope, which holds the kernels: "gemm in gemms".
  const double gemms_ms = inclusive_ms(got, "gemms");
  EXPECT_GT(entry(got, "gemm in gemms").ms, 0.9 * gemms_ms);
  EXPECT_NEAR(gemms_ms, reference_ms, 0.25 * reference_ms);
  EXPECT_LT(inclusive_ms(got, "small"), 0.1 * gemms_ms);
  // 8 GEMMs of 4096^3 take over a millisecond on any GPU this runs on; queueing them does not.
  EXPECT_GT(reference_ms, 1.0);
  EXPECT_LT(host_ms, gemms_ms) << "the host waited for the GPU: the profile would then time the host";
}
#endif

}  // namespace
}  // namespace longnet
