// `longnet bench dist`: the command (launching one process per GPU, the NCCL world, the order of
// the sections) and the helpers its sections share. The sections live in bench_dist_comm.cpp and
// bench_dist_train.cpp.
#include "tools/longnet/bench_dist.h"

#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <memory>
#include <new>

#include "framework/core/error.h"
#include "framework/ops/factory.h"
#include "framework/dist/launch.h"
#include "framework/dist/nccl.h"
#include "tools/longnet/bench_dist_internal.h"
#include "tools/longnet/bench_timing.h"
#include "tools/longnet/rank_launch.h"
#include "tools/longnet/registry.h"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/runtime.h"
#endif

namespace longnet::tools {

// ---- shared helpers

namespace dist_bench {

std::vector<double> max_over_ranks(dist::Communicator& comm, Device device, const std::vector<double>& values) {
  const Tensor t = from_vector<double>(values, {static_cast<int64_t>(values.size())}, Device::cpu()).to(device);
  comm.all_reduce(t, dist::ReduceOp::Max);
  return t.to(Device::cpu()).to_vector<double>();
}

std::string device_name(Device device) {
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) return cuda::properties(device.index).name;
#endif
  return device.is_cpu() ? "CPU" : device.str();
}

void release_cached_memory(Device device) {
  synchronize_device(device);
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) {
    cudaMemPool_t pool;
    LN_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device.index));
    LN_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
  }
#endif
}

std::string printf_string(const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  std::string s(static_cast<size_t>(std::max(n, 0)) + 1, '\0');
  std::vsnprintf(s.data(), s.size(), format, args);
  va_end(args);
  s.resize(static_cast<size_t>(std::max(n, 0)));
  return s;
}

std::string size_label(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  int64_t v = bytes;
  while (u < 4 && v >= 1024 && v % 1024 == 0) {
    v /= 1024;
    ++u;
  }
  return std::to_string(v) + " " + units[u];
}

}  // namespace dist_bench

bool is_out_of_memory(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return true;
  const std::string what = e.what();
  for (const char* sign : {"out of memory", "out of host memory", "ALLOC_FAILED"}) {
    if (what.find(sign) != std::string::npos) return true;
  }
  return false;
}

LongestSearch find_longest(int64_t start, int64_t unit, int64_t max, bool bisect,
                           const std::function<bool(int64_t)>& fits) {
  LN_CHECK(unit >= 1 && start >= 1, "[find_longest] start (", start, ") and unit (", unit, ") must be positive");
  LongestSearch s;
  const auto attempt = [&](int64_t length) {
    ++s.tries;
    return fits(length);
  };
  const int64_t top = max / unit * unit;
  for (int64_t length = (start + unit - 1) / unit * unit; length <= top; length = std::min(2 * length, top)) {
    if (!attempt(length)) {
      s.first_failure = length;
      break;
    }
    s.longest = length;
    if (length == top) break;
  }
  if (!bisect || s.longest == 0 || s.first_failure == 0) return s;
  while (s.first_failure - s.longest > unit) {
    const int64_t mid = s.longest + std::max(unit, (s.first_failure - s.longest) / 2 / unit * unit);
    if (attempt(mid)) {
      s.longest = mid;
    } else {
      s.first_failure = mid;
    }
  }
  return s;
}

void run_dist_bench(dist::Communicator& world, Device device, const DistBenchOptions& o, std::FILE* out) {
  static const std::vector<std::string> kSections{"comm", "dp", "sp", "longest"};
  for (const std::string& s : o.sections) {
    LN_CHECK(std::find(kSections.begin(), kSections.end(), s) != kSections.end(), "bench dist: unknown section '", s,
             "' (known: comm, dp, sp, longest)");
  }
  const auto selected = [&](const std::string& s) {
    return std::find(o.sections.begin(), o.sections.end(), s) != o.sections.end();
  };
  const auto emit = [&](const std::string& table) {
    if (out == nullptr) return;
    std::fputs(table.c_str(), out);
    std::fflush(out);
  };
  if (out != nullptr) {
    std::fprintf(out, "# Distributed: %d x %s (%s backend)\n\n", world.size(), dist_bench::device_name(device).c_str(),
                 world.backend().c_str());
  }
  if (selected("comm")) emit(format_comm(bench_dist_comm(world, device, o)));
  if (selected("dp")) emit(format_scaling(bench_dist_dp(world, device, o)));
  if (selected("sp")) emit(format_scaling(bench_dist_sp(world, device, o)));
  if (selected("longest")) emit(format_longest(bench_dist_longest(world, device, o)));
}

// ---- the command

namespace {

/// Options of the command itself (how it is launched) and the ones given in other units.
struct LaunchOptions {
  int nproc_per_node = 0;
  int master_port = 29500;
  int timeout_s = 300;
  bool quick = false;
  double comm_min_mib = 1, comm_max_mib = 1024;
  double memory_limit_gib = 0;
};

int run(const DistBenchOptions& o, const LaunchOptions& l) {
  if (!dist::nccl_available()) {
    std::fprintf(stderr,
                 "bench dist: this build has no NCCL backend, so there is nothing to measure: build with "
                 "-DLONGNET_CUDA=ON where NCCL is installed and run on GPUs (mpirun -np N longnet bench dist, or "
                 "longnet bench dist --nproc-per-node N). The sections' code is tested on CPU ranks by "
                 "tests/tools/bench_dist_test.cpp.\n");
    return 1;
  }
  const dist::LaunchInfo info = dist::launch_info_from_env();
  if (info.source == "none" && l.nproc_per_node > 1) {
    return dist::spawn_local(l.nproc_per_node, own_command_line("--nproc-per-node"), l.master_port);
  }
  LN_CHECK(l.nproc_per_node <= 1 || l.nproc_per_node == info.world_size, "bench dist: --nproc-per-node ",
           l.nproc_per_node, " but the launcher (", info.source, ") started ", info.world_size,
           " ranks; leave the option out under a launcher");
  return run_rank(info.rank, info.world_size, [&] {
    // In the longest-sequence search a timeout can mean that one rank ran out of memory while
    // another waited in a collective.
    const std::shared_ptr<dist::Communicator> world = make_rank_world(
        info, std::chrono::seconds(l.timeout_s), " (in the longest-sequence search: one rank out of memory while "
        "another waited; a --memory-limit below the GPU's memory avoids it)");
    const Device device = Device::cuda(info.local_rank);
    DefaultDeviceGuard guard(device);
    DistBenchOptions options = o;
    if (info.rank == 0) options.log = stderr;
    run_dist_bench(*world, device, options, info.rank == 0 ? stdout : nullptr);
    world->barrier();
    return 0;
  });
}

}  // namespace

void register_bench_dist(CLI::App& bench) {
  auto o = std::make_shared<DistBenchOptions>();
  auto l = std::make_shared<LaunchOptions>();
  CLI::App* sub = bench.add_subcommand(
      "dist", "N GPUs against one: all_reduce and send/recv bandwidth, data- and sequence-parallel scaling, longest "
              "sequence (run under mpirun -np N, or with --nproc-per-node N)");
  sub->add_option("--only", o->sections, "Sections, comma separated: comm, dp, sp, longest (default: all)")
      ->delimiter(',');
  sub->add_flag("--quick", l->quick,
                "Smoke run: comm up to 64 MiB, 2 timed steps after 1 warm-up, sp at 65536 tokens, longest by "
                "doubling only up to 1M (options given explicitly still win)");
  sub->add_option("--nproc-per-node", l->nproc_per_node, "Start this many ranks on this node (one GPU each)")
      ->check(CLI::Range(1, 64));
  sub->add_option("--master-port", l->master_port, "Rendezvous port of --nproc-per-node")->check(CLI::Range(1, 65535));
  sub->add_option("--timeout", l->timeout_s, "Seconds an NCCL operation may wait before the run is stopped")
      ->check(CLI::Range(1, 86400));
  sub->add_option("--preset", o->preset, "Model preset of dp, sp and longest");
  sub->add_option("--dtype", o->dtype, "Activation dtype: bf16 or f16 (parameters and optimizer state stay f32)");
  sub->add_option("--checkpoint", o->checkpoint, "Activation checkpointing: auto (off for dp, on for sp and longest), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  sub->add_option("--warmup", o->warmup, "Untimed steps before the timed ones (default: dp 3, sp 1, longest 1)")
      ->check(CLI::Range(0, 1000));
  sub->add_option("--reps", o->reps, "Timed steps, median reported (default: dp 10, sp 3, longest 1)")
      ->check(CLI::Range(1, 1000));
  sub->add_option("--comm-min-mib", l->comm_min_mib, "Smallest message of comm, MiB (default 1)");
  sub->add_option("--comm-max-mib", l->comm_max_mib, "Largest message of comm, MiB (default 1024); sizes double");
  sub->add_option("--comm-dtypes", o->comm_dtypes, "all_reduce dtypes, comma separated (default bf16,f32)")->delimiter(',');
  sub->add_option("--comm-runs", o->comm_runs, "Timed runs per size (default 5)")->check(CLI::Range(1, 1000));
  sub->add_option("--dp-seq", o->dp_seq, "dp: tokens per rank (default 8192)")->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  sub->add_option("--sp-seq", o->sp_seq, "sp: tokens of the whole sequence (default 262144)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  sub->add_flag("--per-gpu", o->per_gpu, "sp: --sp-seq tokens per GPU (N GPUs on N times the sequence) instead of in all");
  sub->add_option("--sp-cores", o->sp_cores,
                  "sp: parallel cores, comma separated (dilated_parallel, ring, head_parallel, head_parallel_dense)")
      ->delimiter(',');
  sub->add_option("--ring-placement", o->ring_placement, "sp: ring's chunk placement: zigzag or contiguous")
      ->check(CLI::IsMember({"zigzag", "contiguous"}));
  sub->add_option("--longest-start", o->longest_start, "longest: first length (default 32768)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  sub->add_option("--longest-start-n", o->longest_start_n,
                  "longest: first length of the N-GPU search (default: --longest-start)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  sub->add_option("--longest-granularity", o->longest_granularity,
                  "longest: bisection step after the doubling, 0 for doubling only (default 16384)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  sub->add_option("--longest-max", o->longest_max, "longest: upper bound of the search (default 8388608)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  sub->add_option("--memory-limit", l->memory_limit_gib,
                  "longest: a step whose peak exceeds this many GiB does not fit either (e.g. 80 for an H100's "
                  "memory; default: only out-of-memory errors)");
  on_run(sub, [sub, o, l] {
    const auto given = [&](const char* name) { return sub->count(name) > 0; };
    if (l->quick) {
      if (!given("--comm-max-mib")) l->comm_max_mib = 64;
      if (!given("--comm-runs")) o->comm_runs = 3;
      if (!given("--warmup")) o->warmup = 1;
      if (!given("--reps")) o->reps = 2;
      if (!given("--sp-seq")) o->sp_seq = 65536;
      if (!given("--longest-granularity")) o->longest_granularity = 0;
      if (!given("--longest-max")) o->longest_max = int64_t{1} << 20;
    }
    LN_CHECK(l->comm_min_mib > 0 && l->comm_max_mib >= l->comm_min_mib && l->memory_limit_gib >= 0,
             "bench dist: --comm-min-mib must be positive and at most --comm-max-mib, --memory-limit non-negative");
    o->comm_min_bytes = static_cast<int64_t>(l->comm_min_mib * dist_bench::kMiB);
    o->comm_max_bytes = static_cast<int64_t>(l->comm_max_mib * dist_bench::kMiB);
    o->memory_limit_bytes = static_cast<int64_t>(l->memory_limit_gib * 1024.0 * dist_bench::kMiB);
    return run(*o, *l);
  });
}

}  // namespace longnet::tools
