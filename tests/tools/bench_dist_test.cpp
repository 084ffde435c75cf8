// `bench dist`: each section run on two in-process CPU ranks with a tiny model and small sizes,
// checking that the tables come out with sane numbers (a test of the code path, not of the speed);
// the longest-sequence search against a known threshold; out-of-memory detection on a real
// allocation failure and the attempt wrapper's outcomes; the link table; the command's refusal on
// a build without NCCL. On a GPU (with NCCL): out-of-memory recovery returning CUDA's pool to the
// device, and every section on a world of one GPU.
#include "tools/longnet/bench_dist.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/core/error.h"
#include "framework/core/storage.h"
#include "framework/core/tensor.h"
#include "framework/dist/inprocess.h"
#include "framework/dist/launch.h"
#include "framework/dist/nccl.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"
#include "tests/support/program.h"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace longnet::tools {
namespace {

// ---- helpers

/// Options that make every section quick on CPU ranks: the tiny model, f32, small sizes.
DistBenchOptions tiny_options() {
  DistBenchOptions o;
  o.preset = "tiny";
  o.dtype = "f32";
  o.warmup = 1;
  o.reps = 2;
  o.comm_min_bytes = 64 << 10;
  o.comm_max_bytes = 128 << 10;
  o.comm_runs = 2;
  o.dp_seq = 64;
  o.sp_seq = 128;
  o.longest_start = 32;
  o.longest_granularity = 16;
  o.longest_max = 1024;
  return o;
}

/// Runs `section` on `ranks` in-process ranks; returns each rank's result.
template <class Result>
std::vector<Result> on_ranks(int ranks, const std::function<Result(dist::Communicator&)>& section) {
  std::vector<Result> out(static_cast<size_t>(ranks));
  dist::run_in_process(ranks, [&](dist::Communicator& world) { out[static_cast<size_t>(world.rank())] = section(world); });
  return out;
}

template <class Result>
std::vector<Result> on_two_ranks(const std::function<Result(dist::Communicator&)>& section) {
  return on_ranks<Result>(2, section);
}

/// Data rows of the markdown tables in `text`: lines starting with "| " not followed by a rule.
int table_rows(const std::string& text) {
  std::vector<std::string> lines;
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = std::min(text.find('\n', at), text.size());
    lines.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  int rows = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const bool header = i + 1 < lines.size() && lines[i + 1].rfind("|---", 0) == 0;
    if (lines[i].rfind("| ", 0) == 0 && !header) ++rows;
  }
  return rows;
}

// AddressSanitizer's allocator stops the process on an impossible allocation instead of failing it.
#if defined(__SANITIZE_ADDRESS__)
#define SKIP_UNDER_ASAN() GTEST_SKIP() << "AddressSanitizer aborts on an impossible host allocation"
#else
#define SKIP_UNDER_ASAN() (void)0
#endif

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void expect_sane_step(const StepStats& s) {
  EXPECT_GT(s.ms, 0.0);
  EXPECT_LT(s.ms, 60e3);
  EXPECT_GT(s.peak_mib, 0.0);
}

// ---- the search

TEST(BenchDistSearch, DoublingThenBisectionFindsTheLongestMultipleOfTheUnit) {
  const int64_t threshold = 300000, unit = 16384;
  std::vector<int64_t> asked;
  const LongestSearch s = find_longest(32768, unit, int64_t{1} << 23, true, [&](int64_t n) {
    asked.push_back(n);
    return n <= threshold;
  });
  EXPECT_EQ(s.longest, threshold / unit * unit);  // 18 units = 294912
  EXPECT_EQ(s.first_failure, s.longest + unit);
  EXPECT_EQ(s.tries, static_cast<int>(asked.size()));
  // Doubling 32K .. 512K (5 tries), then fewer than log2(256K / 16K) + 1 bisection steps.
  EXPECT_LE(s.tries, 5 + 5);
  for (const int64_t n : asked) EXPECT_EQ(n % unit, 0) << n;
  EXPECT_EQ(std::vector<int64_t>(asked.begin(), asked.begin() + 5),
            (std::vector<int64_t>{32768, 65536, 131072, 262144, 524288}));
}

TEST(BenchDistSearch, DoublingOnlyStopsAtTheFirstFailure) {
  const LongestSearch s = find_longest(32768, 1, int64_t{1} << 23, false, [](int64_t n) { return n <= 300000; });
  EXPECT_EQ(s.longest, 262144);
  EXPECT_EQ(s.first_failure, 524288);
  EXPECT_EQ(s.tries, 5);
}

TEST(BenchDistSearch, TheBoundAndTheStartAreRespected) {
  std::vector<int64_t> asked;
  // Everything fits: the search ends at the largest multiple of the unit under the bound.
  const LongestSearch all = find_longest(1000, 64, 100000, true, [&](int64_t n) {
    asked.push_back(n);
    return true;
  });
  EXPECT_EQ(all.longest, 100000 / 64 * 64);
  EXPECT_EQ(all.first_failure, 0);
  EXPECT_EQ(asked.front(), 1024);  // the start rounded up to the unit
  EXPECT_LE(*std::max_element(asked.begin(), asked.end()), 100000);
  // Nothing fits: no bisection below the start.
  const LongestSearch none = find_longest(32768, 16384, 1 << 20, true, [](int64_t) { return false; });
  EXPECT_EQ(none.longest, 0);
  EXPECT_EQ(none.first_failure, 32768);
  EXPECT_EQ(none.tries, 1);
}

// ---- out of memory and attempts

TEST(BenchDistMemory, AnAllocationFailureIsOutOfMemoryAndOtherErrorsAreNot) {
  SKIP_UNDER_ASAN();
  try {
    Tensor huge = Tensor::empty({int64_t{1} << 50}, DType::F32, Device::cpu());
    FAIL() << "allocated 4 PiB";
  } catch (const Error& e) {
    EXPECT_TRUE(is_out_of_memory(e)) << e.what();
  }
  try {
    Tensor::empty({4}, DType::F32, Device::cpu()).view({3});
    FAIL() << "viewed 4 elements as 3";
  } catch (const Error& e) {
    EXPECT_FALSE(is_out_of_memory(e)) << e.what();
  }
}

TEST(BenchDistMemory, AttemptsReportFitsOverLimitAndOutOfMemory) {
  SKIP_UNDER_ASAN();
  const Device cpu = Device::cpu();
  const int64_t before = memory_stats(cpu).current_bytes;
  int steps = 0;
  const Attempt fits = attempt_steps(cpu, 0, 2, 3, {}, [&] {
    ++steps;
    Tensor t = Tensor::empty({1 << 18}, DType::F32, cpu);  // 1 MiB
  });
  EXPECT_EQ(fits.fit, Fit::Fits);
  EXPECT_EQ(steps, 5);
  ASSERT_EQ(fits.ms.size(), 3u);
  for (const double ms : fits.ms) EXPECT_GE(ms, 0.0);
  EXPECT_GE(fits.peak_bytes - before, int64_t{1} << 20);

  const Attempt over = attempt_steps(cpu, before + (int64_t{1} << 19), 0, 1, {},
                                     [&] { Tensor t = Tensor::empty({1 << 18}, DType::F32, cpu); });
  EXPECT_EQ(over.fit, Fit::OverLimit);

  bool prepared = false;
  const Attempt oom = attempt_steps(
      cpu, 0, 1, 1, [&] { prepared = true; },
      [&] {
        Tensor kept = Tensor::empty({1 << 20}, DType::F32, cpu);
        Tensor huge = Tensor::empty({int64_t{1} << 50}, DType::F32, cpu);
      });
  EXPECT_TRUE(prepared);
  EXPECT_EQ(oom.fit, Fit::OutOfMemory);
  EXPECT_TRUE(oom.ms.empty());
  EXPECT_EQ(memory_stats(cpu).current_bytes, before);  // everything the failed step held is freed

  // Other errors are not a verdict on the length: they propagate.
  EXPECT_THROW(attempt_steps(cpu, 0, 0, 1, {}, [&] { Tensor::empty({4}, DType::F32, cpu).view({3}); }), Error);
}

// ---- the link

TEST(BenchDistLink, NvLink4ForH100SxmAndH200AndUnknownOtherwise) {
  for (const char* name : {"NVIDIA H200", "NVIDIA H200 NVL", "NVIDIA H100 80GB HBM3"}) {
    const LinkNominal l = nominal_link(name);
    EXPECT_TRUE(l.known()) << name;
    EXPECT_EQ(l.per_direction_gb_per_s, 450.0) << name;
    EXPECT_EQ(l.bidirectional_gb_per_s, 900.0) << name;
  }
  for (const char* name : {"CPU", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 PCIe"}) EXPECT_FALSE(nominal_link(name).known()) << name;
}

// ---- sections on two CPU ranks

TEST(BenchDistSections, CommMeasuresEveryDtypeSizeAndDirection) {
  const DistBenchOptions o = tiny_options();
  const auto results =
      on_two_ranks<CommResult>([&](dist::Communicator& w) { return bench_dist_comm(w, Device::cpu(), o); });
  const CommResult& r = results[0];
  EXPECT_EQ(r.ranks, 2);
  EXPECT_EQ(r.backend, "inprocess");
  // 2 dtypes x 2 sizes of all_reduce, 3 directions x 2 sizes of send_recv between ranks 0 and 1.
  ASSERT_EQ(r.rows.size(), 4u + 6u);
  for (const CommRow& row : r.rows) {
    EXPECT_TRUE(row.bytes == (64 << 10) || row.bytes == (128 << 10)) << row.bytes;
    EXPECT_GT(row.us, 0.0) << row.op << " " << row.detail;
    EXPECT_NEAR(row.gb_per_s, row.bytes / (row.us * 1e-6) / 1e9, 1e-9 * row.gb_per_s);
    // Bus bandwidth of 2 ranks: algbw x 2 (2 - 1) / 2 = algbw; a copy's is its own.
    EXPECT_NEAR(row.bus_gb_per_s, row.gb_per_s, 1e-12 * row.gb_per_s);
  }
  std::vector<std::string> directions;
  for (const CommRow& row : r.rows) {
    if (row.op == "send_recv") directions.push_back(row.detail);
  }
  EXPECT_EQ(directions, (std::vector<std::string>{"0->1", "1->0", "0<->1", "0->1", "1->0", "0<->1"}));
  // Every rank ends with the same figures (the slowest rank's).
  for (size_t i = 0; i < r.rows.size(); ++i) EXPECT_EQ(results[1].rows[i].us, r.rows[i].us);

  const std::string table = format_comm(r);
  EXPECT_TRUE(contains(table, "## Communicator bandwidth: 2 ranks on CPU (inprocess)"));
  EXPECT_TRUE(contains(table, "Link: unknown for CPU"));
  EXPECT_EQ(table_rows(table), 10);
  EXPECT_TRUE(contains(table, "| bf16 | 64 KiB |"));
  EXPECT_TRUE(contains(table, "| 0<->1 | 128 KiB |"));
}

TEST(BenchDistSections, DataParallelScalingHasABaselineAndAnEfficiency) {
  DistBenchOptions o = tiny_options();
  // Steps of about a millisecond: more of them, so that one slow step cannot move the medians.
  o.warmup = 2;
  o.reps = 5;
  const auto results =
      on_two_ranks<ScalingResult>([&](dist::Communicator& w) { return bench_dist_dp(w, Device::cpu(), o); });
  const ScalingResult& r = results[0];
  ASSERT_EQ(r.rows.size(), 2u);
  const ScalingRow& one = r.rows[0];
  const ScalingRow& two = r.rows[1];
  EXPECT_EQ(one.gpus, 1);
  EXPECT_EQ(two.gpus, 2);
  EXPECT_EQ(one.core, "dilated");
  for (const ScalingRow& row : r.rows) {
    expect_sane_step(row.step);
    EXPECT_EQ(row.per_gpu, 64);
    EXPECT_NEAR(row.tokens_per_s, row.gpus * 64 / (row.step.ms * 1e-3), 1e-9 * row.tokens_per_s);
  }
  EXPECT_EQ(one.efficiency, 1.0);
  EXPECT_GT(two.efficiency, 0.0);
  // Data parallelism: efficiency = tokens/s(2) / (2 tokens/s(1)) = T1 / T2.
  EXPECT_NEAR(two.efficiency, one.step.ms / two.step.ms, 1e-9);
  EXPECT_EQ(results[1].rows[1].step.ms, two.step.ms);
  EXPECT_GT(r.model.parameters, 0);
  EXPECT_FALSE(r.model.checkpoint);  // auto: off for dp

  const std::string table = format_scaling(r);
  EXPECT_TRUE(contains(table, "## Data parallel: tiny"));
  EXPECT_EQ(table_rows(table), 2);
  EXPECT_TRUE(contains(table, "| dilated | 1 | 64 | 64 |"));
  EXPECT_TRUE(contains(table, "| baseline |"));
}

TEST(BenchDistSections, SequenceParallelComparesEachCoreWithItsSingleProcessCore) {
  const DistBenchOptions o = tiny_options();
  const auto results =
      on_two_ranks<ScalingResult>([&](dist::Communicator& w) { return bench_dist_sp(w, Device::cpu(), o); });
  const ScalingResult& r = results[0];
  ASSERT_EQ(r.rows.size(), 4u);
  const std::vector<std::string> cores{r.rows[0].core, r.rows[1].core, r.rows[2].core, r.rows[3].core};
  EXPECT_EQ(cores, (std::vector<std::string>{"dilated", "dilated_parallel", "dense", "ring"}));
  for (size_t i = 0; i < 4; i += 2) {
    const ScalingRow& one = r.rows[i];
    const ScalingRow& two = r.rows[i + 1];
    expect_sane_step(one.step);
    expect_sane_step(two.step);
    EXPECT_EQ(one.per_gpu, 128);
    EXPECT_EQ(two.per_gpu, 64);
    EXPECT_EQ(two.sequence, 128);
    EXPECT_GT(two.efficiency, 0.0) << two.core;
    // The same sequence on both: efficiency = T1 / (2 T2).
    EXPECT_NEAR(two.efficiency, one.step.ms / (2 * two.step.ms), 1e-9) << two.core;
  }
  EXPECT_TRUE(r.model.checkpoint);  // auto: on for sp
  const std::string table = format_scaling(r);
  EXPECT_TRUE(contains(table, "## Sequence parallel: tiny"));
  EXPECT_TRUE(contains(table, "in all (strong scaling)"));
  EXPECT_TRUE(contains(table, "zigzag"));
  EXPECT_EQ(table_rows(table), 4);
  EXPECT_TRUE(contains(table, "| ring | 2 | 128 | 64 |"));
}

TEST(BenchDistSections, FourRanksMeasureEveryPowerOfTwoUpToTheirNumber) {
  DistBenchOptions o = tiny_options();
  o.per_gpu = true;
  o.sp_cores = {"dilated_parallel"};
  o.sp_seq = 64;
  const auto dp = on_ranks<ScalingResult>(4, [&](dist::Communicator& w) { return bench_dist_dp(w, Device::cpu(), o); });
  const auto sp = on_ranks<ScalingResult>(4, [&](dist::Communicator& w) { return bench_dist_sp(w, Device::cpu(), o); });
  for (const ScalingResult* r : {&dp[0], &sp[0]}) {
    ASSERT_EQ(r->rows.size(), 3u) << r->section;
    for (size_t i = 0; i < 3; ++i) {
      const ScalingRow& row = r->rows[i];
      EXPECT_EQ(row.gpus, 1 << i) << r->section;
      expect_sane_step(row.step);
      // Every count's efficiency is against the one-GPU row.
      const double t1 = r->rows[0].step.ms;
      EXPECT_NEAR(row.efficiency, r->section == "dp" ? t1 / row.step.ms : row.tflops_per_gpu / r->rows[0].tflops_per_gpu,
                  1e-9);
    }
  }
  // Weak scaling: each count trains on that many times the sequence, 64 tokens per GPU.
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(sp[0].rows[i].sequence, 64 << i);
    EXPECT_EQ(sp[0].rows[i].per_gpu, 64);
  }
  // Every rank reports the same (slowest-rank) figures.
  EXPECT_EQ(dp[3].rows[1].step.ms, dp[0].rows[1].step.ms);
  EXPECT_EQ(table_rows(format_scaling(dp[0])), 3);
}

TEST(BenchDistSections, SequenceParallelPerGpuTrainsOnNTimesTheSequence) {
  DistBenchOptions o = tiny_options();
  o.per_gpu = true;
  o.sp_cores = {"dilated_parallel"};
  o.sp_seq = 64;
  const auto results =
      on_two_ranks<ScalingResult>([&](dist::Communicator& w) { return bench_dist_sp(w, Device::cpu(), o); });
  const ScalingResult& r = results[0];
  ASSERT_EQ(r.rows.size(), 2u);
  EXPECT_EQ(r.rows[0].sequence, 64);
  EXPECT_EQ(r.rows[1].sequence, 128);
  EXPECT_EQ(r.rows[1].per_gpu, 64);
  EXPECT_GT(r.rows[1].efficiency, 0.0);
  EXPECT_TRUE(contains(format_scaling(r), "per GPU (weak scaling)"));
}

TEST(BenchDistSections, SequenceParallelRejectsSequencesThatDoNotSplit) {
  DistBenchOptions o = tiny_options();
  o.sp_seq = 130;  // 2 ranks x zigzag = 4 chunks
  o.sp_cores = {"ring"};
  EXPECT_TRUE(contains(testing::error_message([&] {
                         dist::run_in_process(2, [&](dist::Communicator& w) { bench_dist_sp(w, Device::cpu(), o); });
                       }),
                       "130 tokens do not split into 4 equal chunks for ring"));
  o.sp_cores = {"dilated"};
  EXPECT_TRUE(contains(testing::error_message([&] {
                         dist::run_in_process(1, [&](dist::Communicator& w) { bench_dist_sp(w, Device::cpu(), o); });
                       }),
                       "'dilated' is not a sequence-parallel core"));
}

TEST(BenchDistSections, LongestFindsLongerSequencesOnTwoRanksUnderAMemoryLimit) {
  DistBenchOptions o = tiny_options();
  o.memory_limit_bytes = 6 << 20;
  o.longest_max = 8192;
  o.reps = 1;
  const auto results =
      on_two_ranks<LongestResult>([&](dist::Communicator& w) { return bench_dist_longest(w, Device::cpu(), o); });
  const LongestResult& r = results[0];
  ASSERT_EQ(r.rows.size(), 2u);
  const LongestRow& one = r.rows[0];
  const LongestRow& two = r.rows[1];
  EXPECT_EQ(one.core, "dilated");
  EXPECT_EQ(two.core, "dilated_parallel");
  EXPECT_EQ(one.unit, 16);
  EXPECT_EQ(two.unit, 32);  // 2 ranks x the longest segment (16), a multiple of the granularity
  for (const LongestRow& row : r.rows) {
    ASSERT_GT(row.longest, 0) << row.core;
    EXPECT_EQ(row.longest % row.unit, 0);
    EXPECT_EQ(row.per_gpu * row.gpus, row.longest);
    expect_sane_step(row.step);
    EXPECT_LE(row.step.peak_mib, 6.0);  // what fits stays under the limit
    // The limit stops the search before its bound, one unit above the longest.
    EXPECT_EQ(row.first_failure, row.longest + row.unit) << row.core;
    EXPECT_EQ(row.failure, "peak over the limit");
    EXPECT_NEAR(row.tokens_per_s, row.longest / (row.step.ms * 1e-3), 1e-9 * row.tokens_per_s);
  }
  // Each rank holds half the sequence: two ranks fit a longer one.
  EXPECT_GT(two.longest, one.longest);
  EXPECT_EQ(results[1].rows[1].longest, two.longest);

  const std::string table = format_longest(r);
  EXPECT_TRUE(contains(table, "## Longest sequence: tiny"));
  EXPECT_TRUE(contains(table, "or a peak over 0.00586 GiB")) << table;
  EXPECT_EQ(table_rows(table), 2);
  EXPECT_TRUE(contains(table, "2 GPUs train on "));

  // The N-GPU search may start at its own length: at the bound, far over the limit, its first and
  // only try fails, while the one-GPU search starts as before.
  o.longest_start_n = o.longest_max;
  const LongestResult high =
      on_two_ranks<LongestResult>([&](dist::Communicator& w) { return bench_dist_longest(w, Device::cpu(), o); })[0];
  EXPECT_GT(high.rows[0].longest, 0);
  EXPECT_EQ(high.rows[1].longest, 0);
  EXPECT_EQ(high.rows[1].tries, 1);
  EXPECT_EQ(high.rows[1].first_failure, o.longest_max);
  EXPECT_TRUE(contains(format_longest(high), "(1 GPU: 32 tokens; N GPUs: 8192)"));
}

TEST(BenchDistSections, RunPrintsEverySectionInOrder) {
  DistBenchOptions o = tiny_options();
  o.comm_dtypes = {"f32"};
  o.sp_cores = {"dilated_parallel"};
  o.longest_max = 64;
  std::vector<std::string> printed(2);
  dist::run_in_process(2, [&](dist::Communicator& w) {
    std::FILE* out = w.rank() == 0 ? std::tmpfile() : nullptr;
    run_dist_bench(w, Device::cpu(), o, out);
    if (out == nullptr) return;
    std::rewind(out);
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, out)) > 0;) printed[0].append(buf, n);
    std::fclose(out);
  });
  const std::string& text = printed[0];
  for (const char* title : {"# Distributed: 2 x CPU (inprocess backend)", "## Communicator bandwidth", "## Data parallel",
                            "## Sequence parallel", "## Longest sequence"}) {
    EXPECT_TRUE(contains(text, title)) << title << "\n" << text;
  }
  EXPECT_LT(text.find("## Communicator"), text.find("## Data parallel"));
  EXPECT_LT(text.find("## Sequence parallel"), text.find("## Longest"));

  o.sections = {"dp", "tensor_parallel"};
  EXPECT_TRUE(contains(testing::error_message([&] {
                         dist::run_in_process(1, [&](dist::Communicator& w) { run_dist_bench(w, Device::cpu(), o, nullptr); });
                       }),
                       "unknown section 'tensor_parallel'"));
}

// ---- the command

TEST(BenchDistCommand, ABuildWithoutNcclSaysSo) {
  if (dist::nccl_available()) GTEST_SKIP() << "this build has NCCL";
  std::string output;
  EXPECT_EQ(testing::run_longnet("bench dist --quick", output), 1) << output;
  EXPECT_TRUE(contains(output, "this build has no NCCL backend")) << output;
}

// ---- on a GPU

TEST(BenchDistGpu, OutOfMemoryIsCaughtAndThePoolGoesBackToTheDevice) {
  LN_REQUIRE_GPU();
#ifdef LONGNET_WITH_CUDA
  const Device gpu = Device::cuda(0);
  const int64_t before = memory_stats(gpu).current_bytes;
  cudaMemPool_t pool;
  ASSERT_EQ(cudaDeviceGetDefaultMemPool(&pool, 0), cudaSuccess);
  const auto reserved = [&] {
    uint64_t bytes = 0;
    EXPECT_EQ(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &bytes), cudaSuccess);
    return bytes;
  };
  const Attempt a = attempt_steps(gpu, 0, 0, 1, {}, [&] {
    // A block the pool keeps after it is freed, then a request no GPU has.
    Tensor kept = Tensor::empty({int64_t{1} << 28}, DType::F32, gpu);
    EXPECT_GE(reserved(), uint64_t{1} << 30);
    Tensor huge = Tensor::empty({int64_t{1} << 46}, DType::F32, gpu);
  });
  EXPECT_EQ(a.fit, Fit::OutOfMemory);
  EXPECT_EQ(memory_stats(gpu).current_bytes, before);
  // Trimmed: the 1 GiB block went back to the device, not just to the pool.
  EXPECT_LT(reserved(), uint64_t{1} << 30);
#endif
}

TEST(BenchDistGpu, EverySectionRunsOnAWorldOfOneGpu) {
  LN_REQUIRE_GPU();
  if (!dist::nccl_available()) GTEST_SKIP() << "this build has no NCCL";
  const std::shared_ptr<dist::Communicator> world = dist::make_nccl_communicator(dist::LaunchInfo{});
  DistBenchOptions o;
  o.preset = "small";  // head dim 64, which the GPU kernels take
  o.warmup = 1;
  o.reps = 2;
  o.comm_min_bytes = 1 << 20;
  o.comm_max_bytes = 2 << 20;
  o.dp_seq = 1024;
  o.sp_seq = 4096;
  o.longest_start = 2048;
  o.longest_max = 8192;
  o.longest_granularity = 0;
  const Device gpu = Device::cuda(0);
  const CommResult comm = bench_dist_comm(*world, gpu, o);
  ASSERT_EQ(comm.rows.size(), 4u);  // no pairs in a world of one
  for (const CommRow& row : comm.rows) EXPECT_GT(row.us, 0.0);
  const ScalingResult dp = bench_dist_dp(*world, gpu, o);
  ASSERT_EQ(dp.rows.size(), 1u);
  expect_sane_step(dp.rows[0].step);
  const ScalingResult sp = bench_dist_sp(*world, gpu, o);
  ASSERT_EQ(sp.rows.size(), 2u);  // the dilated and dense baselines
  for (const ScalingRow& row : sp.rows) expect_sane_step(row.step);
  const LongestResult longest = bench_dist_longest(*world, gpu, o);
  ASSERT_EQ(longest.rows.size(), 1u);
  EXPECT_EQ(longest.rows[0].longest, 8192);  // a small model fits 8K tokens on any GPU
  EXPECT_FALSE(format_longest(longest).empty());
}

}  // namespace
}  // namespace longnet::tools
