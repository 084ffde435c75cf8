// GPU GEMM benchmark: bf16 linear-layer products x (M, K) @ W^T with W (N, K), through cuda::gemm
// (the algorithm its first call chose by timing the heuristic's proposals, as training runs it)
// against the fastest of those proposals timed here, and the same product with the bias+GELU
// epilogue. Times are medians of CUDA-event intervals; consecutive runs use different buffer sets,
// so none finds its operands left in L2 by the run before.
#include "tools/longnet/bench_gemm.h"

#include <cstdio>
#include <memory>

#include "tools/longnet/bench_timing.h"
#include "tools/longnet/registry.h"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <vector>

#include "framework/core/tensor.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/gemm.h"
#include "framework/cuda/runtime.h"
#include "framework/ops/factory.h"
#endif

namespace longnet::tools {
namespace {

struct GemmBenchOptions {
  int reps = 20;       // timed runs per case (after warm-up)
  bool quick = false;  // three shapes only
};

#ifdef LONGNET_WITH_CUDA

constexpr int kDevice = 0;
constexpr int kSets = 3;           // buffer sets the runs rotate among
constexpr int kWarmup = 3;
constexpr int kRounds = 3;          // turns in which ours and every proposal are timed
constexpr int64_t kRandomBlock = int64_t{1} << 22;  // random values tiled over every buffer
constexpr double kTarget = 0.9;    // ours / best

// Median milliseconds of fn(set) over `reps` runs after warm-up; run r uses buffer set r % kSets.
double median_ms(const std::function<void(int)>& fn, int reps) {
  return timed_median_ms(fn, {kDevice, reps, kWarmup, kSets, true});
}

// Copies of `block` laid end to end over t: realistic bit patterns (tensor-core power, and so
// clocks, depend on them) without drawing gigabytes of random numbers on the host.
void fill_tiled(const Tensor& t, const Tensor& block) {
  const size_t total = static_cast<size_t>(t.numel()) * dtype_size(t.dtype());
  const size_t chunk = static_cast<size_t>(block.numel()) * dtype_size(block.dtype());
  for (size_t off = 0; off < total; off += chunk) {
    LN_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(t.raw_data()) + off, block.raw_data(), std::min(chunk, total - off),
                                  cudaMemcpyDeviceToDevice, cuda::stream(kDevice)));
  }
}

/// The three products of a linear layer y (M, N) = x (M, K) @ W^T in training.
enum class Product { Forward, InputGrad, WeightGrad };

const char* product_name(Product p) {
  switch (p) {
    case Product::Forward: return "y = x W^T";
    case Product::InputGrad: return "dx = dy W";
    case Product::WeightGrad: return "dW = dy^T x";
  }
  return "";
}

struct Case {
  int64_t m, k, n;
  Product product = Product::Forward;
};

struct BufferSet {
  Tensor x, w, y, bias, pre;  // x (M, K), w (N, K), y and pre (M, N), bias (N)
};

BufferSet make_buffers(const Case& s, const Tensor& block) {
  const Device dev = Device::cuda(kDevice);
  BufferSet b{Tensor::empty({s.m, s.k}, DType::BF16, dev), Tensor::empty({s.n, s.k}, DType::BF16, dev),
              Tensor::empty({s.m, s.n}, DType::BF16, dev), Tensor::empty({s.n}, DType::BF16, dev),
              Tensor::empty({s.m, s.n}, DType::BF16, dev)};
  for (const Tensor* t : {&b.x, &b.w, &b.y, &b.bias}) fill_tiled(*t, block);
  return b;
}

// The case's product, or with its epilogue as training runs it: the forward with bias+GELU
// (writing the pre-activation too), dW with the bias gradient. dx has no epilogue.
cuda::GemmParams linear(const Case& s, const BufferSet& b, bool epilogue) {
  cuda::GemmParams p;
  p.device = kDevice;
  p.dtype = DType::BF16;
  switch (s.product) {
    case Product::Forward:  // (M, K) @ (N, K)^T -> (M, N)
      p.m = s.m, p.n = s.n, p.k = s.k;
      p.a = b.x.raw_data(), p.lda = s.k;
      p.b = b.w.raw_data(), p.ldb = s.k, p.trans_b = true;
      p.c = b.y.raw_data(), p.ldc = s.n;
      if (epilogue) {
        p.epilogue = cuda::GemmEpilogue::BiasGelu;
        p.bias = b.bias.raw_data();
        p.aux = b.pre.raw_data(), p.ld_aux = s.n;
      }
      break;
    case Product::InputGrad:  // dy (M, N) @ W (N, K) -> dx (M, K), into x's buffer
      p.m = s.m, p.n = s.k, p.k = s.n;
      p.a = b.y.raw_data(), p.lda = s.n;
      p.b = b.w.raw_data(), p.ldb = s.k;
      p.c = b.x.raw_data(), p.ldc = s.k;
      break;
    case Product::WeightGrad:  // dy (M, N)^T @ x (M, K) -> dW (N, K), into W's buffer; bias grad (N)
      p.m = s.n, p.n = s.k, p.k = s.m;
      p.a = b.y.raw_data(), p.lda = s.n, p.trans_a = true;
      p.b = b.x.raw_data(), p.ldb = s.k;
      p.c = b.w.raw_data(), p.ldc = s.k;
      if (epilogue) {
        p.epilogue = cuda::GemmEpilogue::BGradA;
        p.bias_grad = b.bias.raw_data();
      }
      break;
  }
  return p;
}

// Prints one table row; returns ours / best.
double bench_case(const Case& s, int reps, const Tensor& block) {
  std::vector<BufferSet> sets;
  std::vector<cuda::GemmParams> plain, fused;
  for (int i = 0; i < kSets; ++i) {
    sets.push_back(make_buffers(s, block));
    plain.push_back(linear(s, sets.back(), false));
    fused.push_back(linear(s, sets.back(), true));
  }
  const double tflop = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k) * 1e-12;
  // The first call of a shape chooses its algorithm by timing (see cuda::gemm); untimed here, as
  // it is once per process in training.
  cuda::gemm(plain[0]);
  cuda::gemm(fused[0]);
  LN_CUDA_CHECK(cudaStreamSynchronize(cuda::stream(kDevice)));
  // The card's clock drifts over a sweep (the same algorithm was seen 20% apart within one run),
  // so ours and every proposal are timed in turns over kRounds rounds, keeping each one's fastest
  // round.
  const int chosen = cuda::gemm_chosen_algorithm(plain[0]);
  const int count = cuda::gemm_algorithm_count(plain[0]);
  double ours = std::numeric_limits<double>::infinity();
  std::vector<double> per_algo(static_cast<size_t>(count), std::numeric_limits<double>::infinity());
  std::vector<bool> runs(static_cast<size_t>(count), true);
  for (int round = 0; round < kRounds; ++round) {
    ours = std::min(ours, median_ms([&](int i) { cuda::gemm(plain[static_cast<size_t>(i)]); }, reps));
    for (int a = 0; a < count; ++a) {
      if (!runs[static_cast<size_t>(a)]) continue;
      try {
        const double t = median_ms([&](int i) { cuda::gemm_with_algorithm(plain[static_cast<size_t>(i)], a); }, reps);
        per_algo[static_cast<size_t>(a)] = std::min(per_algo[static_cast<size_t>(a)], t);
      } catch (const Error&) {
        runs[static_cast<size_t>(a)] = false;  // a proposal that does not run is no contender
      }
    }
  }
  double best = std::numeric_limits<double>::infinity();
  int best_index = -1, failed = 0;
  for (int a = 0; a < count; ++a) {
    if (!runs[static_cast<size_t>(a)]) {
      ++failed;
    } else if (per_algo[static_cast<size_t>(a)] < best) {
      best = per_algo[static_cast<size_t>(a)];
      best_index = a;
    }
  }
  std::string epilogue = "| - | - | - |";
  if (s.product != Product::InputGrad) {
    const double epi = median_ms([&](int i) { cuda::gemm(fused[static_cast<size_t>(i)]); }, reps);
    const bool epi_fused = cuda::gemm_algorithm_count(fused[0]) > 0;
    char cells[128];
    std::snprintf(cells, sizeof(cells), "| %.3f | %.1f | %+.1f%% (%s) |", epi, tflop / epi * 1e3,
                  (epi / ours - 1.0) * 100.0, epi_fused ? "fused" : "unfused");
    epilogue = cells;
  }
  const double ratio = best / ours;
  std::printf("| %s | %lld | %lld | %lld | %.3f | %.1f | %.1f | %d | %d of %d%s | %.1f%%%s %s\n", product_name(s.product),
              static_cast<long long>(s.m), static_cast<long long>(s.k), static_cast<long long>(s.n), ours,
              tflop / ours * 1e3, tflop / best * 1e3, chosen, best_index, count,
              failed ? (" (" + std::to_string(failed) + " failed)").c_str() : "", ratio * 100.0,
              ratio < kTarget ? " **below target**" : "", epilogue.c_str());
  std::fflush(stdout);
  return ratio;
}

int run_gemm_bench(const GemmBenchOptions& opt) {
  if (cuda::device_count() == 0) {
    std::fprintf(stderr, "bench gemm: no CUDA device is visible to this process; the benchmark needs a GPU\n");
    return 1;
  }
  std::vector<Case> cases;
  if (opt.quick) {
    cases = {{8192, 768, 3072}, {8192, 3072, 768}, {8192, 8192, 8192}};
  } else {
    for (int64_t m : {8192, 32768, 65536}) {
      for (const auto& [k, n] : {std::pair<int64_t, int64_t>{768, 768}, {768, 3072}, {3072, 768}, {4096, 4096}}) {
        cases.push_back({m, k, n});
      }
    }
    cases.push_back({8192, 8192, 8192});
    // A training step's backward products of the 125M model's layers at 32K tokens.
    for (const Product p : {Product::InputGrad, Product::WeightGrad}) {
      for (const auto& [k, n] : {std::pair<int64_t, int64_t>{768, 768}, {768, 3072}, {3072, 768}}) {
        cases.push_back({32768, k, n, p});
      }
    }
    // The LM head of the presets (vocabulary 50257, an odd leading dimension for the logits and
    // their gradient) on one chunk of the chunked loss's rows, and the same padded to 50304.
    for (const Product p : {Product::Forward, Product::InputGrad, Product::WeightGrad}) {
      for (const int64_t v : {int64_t{50257}, int64_t{50304}}) cases.push_back({2560, 768, v, p});
    }
  }
  const Tensor block = randn({kRandomBlock}, DType::BF16, Device::cuda(kDevice));
  std::printf("## bf16 GEMM on %s: a linear layer's products, y (M, N) = x (M, K) @ W^T, W (N, K)\n\n",
              cuda::properties(kDevice).name);
  std::printf("Median of %d CUDA-event timed runs after %d warm-up runs, rotating among %d buffer sets; "
              "ours and every proposal are timed in turns over %d rounds and keep their fastest round. "
              "*ours*: cuda::gemm after a first, untimed call, which chose its algorithm by timing the "
              "cuBLASLt heuristic's proposals (LONGNET_GEMM_AUTOTUNE=0: the heuristic's first choice); "
              "*ours algo*: the index it runs; *best*: fastest of the proposals timed here (index of count). "
              "Target ours/best >= %.0f%%. The backward's products: dx = dy (M, N) @ W and dW = dy^T @ x "
              "(the sum runs over the M tokens). *epilogue*: the same product with the epilogue training uses: "
              "bias+GELU writing the pre-activation too (forward), the bias gradient (dW); overhead vs ours.\n\n",
              opt.reps, kWarmup, kSets, kRounds, kTarget * 100.0);
  std::printf("| product | M | K | N | ours ms | ours TFLOP/s | best TFLOP/s | ours algo | best algo | ours/best | "
              "epilogue ms | epilogue TFLOP/s | epilogue overhead |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|\n");
  double worst = std::numeric_limits<double>::infinity();
  int below = 0;
  for (const Case& c : cases) {
    const double r = bench_case(c, opt.reps, block);
    worst = std::min(worst, r);
    below += r < kTarget;
  }
  std::printf("\nWorst ours/best: %.1f%%; %d of %zu shapes below the %.0f%% target.\n", worst * 100.0, below,
              cases.size(), kTarget * 100.0);
  return 0;
}

#else

int run_gemm_bench(const GemmBenchOptions&) {
  std::fprintf(stderr, "bench gemm: this build has no CUDA backend (configure with -DLONGNET_CUDA=ON)\n");
  return 1;
}

#endif

}  // namespace

void register_bench_gemm(CLI::App& bench) {
  auto opt = std::make_shared<GemmBenchOptions>();
  CLI::App* gemm = bench.add_subcommand("gemm", "CUDA bf16 GEMM: cuda::gemm's timed choice vs best, bias+GELU");
  gemm->add_option("--reps", opt->reps, "Timed runs per case (median)")->check(CLI::Range(1, 100000));
  gemm->add_flag("--quick", opt->quick, "Three shapes only (smoke test)");
  on_run(gemm, [opt] { return run_gemm_bench(*opt); });
}

}  // namespace longnet::tools
