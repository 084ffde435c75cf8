// CPU benchmark: f32 GEMM through longnet::matmul against cblas_sgemm on the same buffers, and
// LayerNorm forward / forward+backward memory throughput. Medians of wall-clock times.
#include "tools/longnet/bench_cpu.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "framework/ops/matmul.h"
#include "framework/ops/norm.h"
#include "framework/ops/ops.h"

namespace longnet::tools {
namespace {

constexpr int kWarmup = 2;

double seconds_of(const std::function<void()>& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// Median seconds of each function; repetitions alternate between them so that drift of a shared
// machine affects all alike.
std::vector<double> time_interleaved(const std::vector<std::function<void()>>& fns, int reps) {
  for (int i = 0; i < kWarmup; ++i) {
    for (const auto& f : fns) f();
  }
  std::vector<std::vector<double>> samples(fns.size());
  for (int r = 0; r < reps; ++r) {
    for (size_t i = 0; i < fns.size(); ++i) samples[i].push_back(seconds_of(fns[i]));
  }
  std::vector<double> out;
  for (const auto& s : samples) out.push_back(median(s));
  return out;
}

void bench_gemm(const CpuBenchOptions& opt) {
  struct Shape3 { int64_t m, k, n; };
  const std::vector<Shape3> shapes = opt.quick
      ? std::vector<Shape3>{{128, 256, 256}, {256, 256, 512}}
      : std::vector<Shape3>{{512, 768, 768}, {2048, 768, 3072}, {2048, 3072, 768}, {1024, 1024, 1024}, {4096, 512, 512}};
  std::printf("| GEMM f32 (MxKxN) | longnet::matmul ms | GFLOP/s | cblas_sgemm ms | GFLOP/s | matmul/cblas |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  NoGradGuard no_grad;
  for (const auto& [m, k, n] : shapes) {
    const Tensor a = randn({m, k}), b = randn({k, n});
    const Tensor c = Tensor::empty({m, n});
    const float *pa = a.data<float>(), *pb = b.data<float>();
    float* pc = c.data<float>();
    const auto t = time_interleaved(
        {[&] { matmul(a, b); },
         [&] {
           cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
                       static_cast<int>(k), 1.0f, pa, static_cast<int>(k), pb, static_cast<int>(n), 0.0f, pc,
                       static_cast<int>(n));
         }},
        opt.reps);
    const double gflop = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) * 1e-9;
    std::printf("| %lldx%lldx%lld | %.2f | %.1f | %.2f | %.1f | %.3f |\n", static_cast<long long>(m),
                static_cast<long long>(k), static_cast<long long>(n), t[0] * 1e3, gflop / t[0], t[1] * 1e3,
                gflop / t[1], t[1] / t[0]);
  }
}

void bench_layer_norm(const CpuBenchOptions& opt) {
  struct Rows { int64_t rows, d; };
  const std::vector<Rows> shapes = opt.quick ? std::vector<Rows>{{1024, 256}} : std::vector<Rows>{{8192, 768}, {16384, 1024}};
  std::printf("\n| LayerNorm f32 (rows x D) | forward ms | GB/s | forward+backward ms | GB/s |\n");
  std::printf("|---|---:|---:|---:|---:|\n");
  for (const auto& [rows, d] : shapes) {
    const Tensor x = randn({rows, d}), dy = randn({rows, d});
    const Tensor w = ones({d}).requires_grad_(true), b = zeros({d}).requires_grad_(true);
    const Tensor xg = x.detach().requires_grad_(true);
    const auto t = time_interleaved(
        {[&] {
           NoGradGuard no_grad;
           layer_norm(x, w, b);
         },
         [&] {
           for (const Tensor& p : {xg, w, b}) p.set_grad(Tensor());
           layer_norm(xg, w, b).backward(dy);
         }},
        opt.reps);
    // Forward reads x and writes y; backward also reads x and dy and writes dx (weight and bias are
    // negligible next to the activations).
    const double bytes = static_cast<double>(rows * d) * sizeof(float);
    std::printf("| %lldx%lld | %.2f | %.1f | %.2f | %.1f |\n", static_cast<long long>(rows),
                static_cast<long long>(d), t[0] * 1e3, 2 * bytes / t[0] * 1e-9, t[1] * 1e3,
                5 * bytes / t[1] * 1e-9);
  }
}

}  // namespace

int run_cpu_bench(const CpuBenchOptions& opt) {
  LN_CHECK(opt.reps >= 1, "[bench cpu] --reps must be at least 1, got ", opt.reps);
  LN_CHECK(opt.threads >= 0, "[bench cpu] --threads must not be negative, got ", opt.threads);
  const int threads = opt.threads > 0 ? opt.threads : omp_get_num_procs();
  // GEMMs run outside OpenMP regions, so both pools may use every core without oversubscribing.
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  std::printf("CPU engine: %d threads, median of %d repetitions after %d warm-up\n\n", threads, opt.reps, kWarmup);
  bench_gemm(opt);
  bench_layer_norm(opt);
  return 0;
}

}  // namespace longnet::tools
