// CPU benchmark: f32 GEMM through longnet::matmul against cblas_sgemm on the same buffers, and
// LayerNorm forward / forward+backward memory throughput against a plain copy. Medians of
// wall-clock times after warm-up.
#include "tools/longnet/bench_cpu.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <thread>
#include <vector>

#include "framework/ops/matmul.h"
#include "framework/ops/norm.h"
#include "framework/ops/ops.h"

namespace longnet::tools {
namespace {

constexpr int kWarmup = 2;
// GEMM timings alternate between longnet::matmul and direct BLAS blocks this many times, so that
// drift of a shared machine touches both.
constexpr int kRounds = 5;

// Seconds of each of `reps` calls, after warm-up calls.
std::vector<double> samples(const std::function<void()>& fn, int reps) {
  for (int i = 0; i < kWarmup; ++i) fn();
  std::vector<double> out;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// OpenBLAS's idle pool threads spin (about 2^28 cycles) before they sleep, taking cores from the
// OpenMP workers timed next; this waits until they are parked.
void settle_blas_pool() { std::this_thread::sleep_for(std::chrono::milliseconds(300)); }

void bench_gemm(const CpuBenchOptions& opt, int threads) {
  struct Mkn { int64_t m, k, n; };
  const std::vector<Mkn> shapes = opt.quick
      ? std::vector<Mkn>{{128, 256, 256}, {256, 256, 512}}
      : std::vector<Mkn>{{512, 768, 768}, {2048, 768, 3072}, {2048, 3072, 768}, {1024, 1024, 1024}, {4096, 512, 512}};
  std::printf("| GEMM f32 (MxKxN) | longnet::matmul ms | GFLOP/s | cblas_sgemm ms | GFLOP/s | matmul/cblas |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  NoGradGuard no_grad;
  for (const auto& [m, k, n] : shapes) {
    const Tensor a = randn({m, k}), b = randn({k, n}), c = Tensor::empty({m, n});
    const int mi = static_cast<int>(m), ki = static_cast<int>(k), ni = static_cast<int>(n);
    auto direct = [&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mi, ni, ki, 1.0f, a.data<float>(), ki, b.data<float>(),
                  ni, 0.0f, c.data<float>(), ni);
    };
    // longnet::matmul splits the product over OpenMP threads, each calling BLAS single-threaded;
    // the direct call uses OpenBLAS's own thread pool. Each block runs in its own mode.
    // The two sides take turns; each keeps its best round's median, so a round in which another
    // process held a core (this VM is shared) counts against neither.
    double t_ours = 1e30, t_direct = 1e30;
    for (int round = 0; round < kRounds; ++round) {
      t_ours = std::min(t_ours, median(samples([&] { matmul(a, b); }, opt.reps)));
      openblas_set_num_threads(threads);
      t_direct = std::min(t_direct, median(samples(direct, opt.reps)));
      settle_blas_pool();
    }
    const double gflop = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) * 1e-9;
    std::printf("| %dx%dx%d | %.2f | %.1f | %.2f | %.1f | %.3f |\n", mi, ki, ni, t_ours * 1e3, gflop / t_ours,
                t_direct * 1e3, gflop / t_direct, t_direct / t_ours);
  }
}

void bench_layer_norm(const CpuBenchOptions& opt) {
  struct RowsD { int64_t rows, d; };
  const std::vector<RowsD> shapes =
      opt.quick ? std::vector<RowsD>{{1024, 256}} : std::vector<RowsD>{{8192, 768}, {16384, 1024}};
  std::printf("\n| LayerNorm f32 (rows x D) | forward ms | GB/s | forward+backward ms | GB/s | copy_ GB/s |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (const auto& [rows, d] : shapes) {
    const Tensor x = randn({rows, d}), dy = randn({rows, d}), copy_dst = Tensor::empty({rows, d});
    const Tensor w = ones({d}).requires_grad_(true), b = zeros({d}).requires_grad_(true);
    const Tensor xg = x.detach().requires_grad_(true);
    // Copying into a preallocated tensor is the memory-bandwidth anchor.
    const double t_copy = median(samples([&] { copy_(copy_dst, x); }, opt.reps));
    const double t_fwd = median(samples([&] {
      NoGradGuard no_grad;
      layer_norm(x, w, b);
    }, opt.reps));
    const double t_bwd = median(samples([&] {
      for (const Tensor& p : {xg, w, b}) p.set_grad(Tensor());
      layer_norm(xg, w, b).backward(dy);
    }, opt.reps));
    // Forward reads x and writes y; backward also reads x and dy and writes dx (weight and bias are
    // negligible next to the activations).
    const double gb = static_cast<double>(rows * d) * sizeof(float) * 1e-9;
    std::printf("| %lldx%lld | %.2f | %.1f | %.2f | %.1f | %.1f |\n", static_cast<long long>(rows),
                static_cast<long long>(d), t_fwd * 1e3, 2 * gb / t_fwd, t_bwd * 1e3, 5 * gb / t_bwd, 2 * gb / t_copy);
  }
}

}  // namespace

int run_cpu_bench(const CpuBenchOptions& opt) {
  LN_CHECK(opt.reps >= 1, "[bench cpu] --reps must be at least 1, got ", opt.reps);
  LN_CHECK(opt.threads >= 0, "[bench cpu] --threads must not be negative, got ", opt.threads);
  const int threads = opt.threads > 0 ? opt.threads : omp_get_num_procs();
  omp_set_num_threads(threads);
  settle_blas_pool();  // the pool starts spinning when the library loads
  std::printf("CPU engine: %d threads; medians of timed calls after %d warm-up calls (GEMM: the best of %d "
              "alternating rounds of %d per side, others: %d)\n\n", threads, kWarmup, kRounds, opt.reps, opt.reps);
  bench_gemm(opt, threads);
  bench_layer_norm(opt);
  return 0;
}

}  // namespace longnet::tools
