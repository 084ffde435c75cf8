// cuda::gemm's choice of algorithm by timing on the first call of a shape: the call's results are
// the product's (once, even though the tuning ran it many times), calls that accumulate into C or
// are captured into a CUDA graph are not tuned, and the choice is one of the heuristic's proposals.
// Each test uses shapes of its own, so that its first call is the first of its plan key.
#include <gtest/gtest.h>

#include "tests/support/gpu.h"

#ifdef LONGNET_WITH_CUDA

#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include "framework/cuda/context.h"
#include "framework/cuda/gemm.h"
#include "framework/ops/copy.h"
#include "framework/ops/factory.h"

namespace longnet {
namespace {

using cuda::GemmParams;

constexpr DType kType = DType::BF16;

// Uniform values in [-1, 1) as bf16 stores them, so the reference sees the GPU's exact inputs.
std::vector<double> random_bf16(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = dist(gen);
  return from_vector<double>(v, {n}).to(kType).to(DType::F64).to_vector<double>();
}

Tensor upload(const std::vector<double>& v) {
  return from_vector<double>(v, {static_cast<int64_t>(v.size())}).to(kType).to(Device::cuda(0));
}

std::vector<double> download(const Tensor& t) { return t.to(Device::cpu()).to(DType::F64).to_vector<double>(); }

// One row-major product C (M, N) = alpha * A (M, K) @ B (K, N) + beta * C0 with its operands on
// the GPU and its reference computed here in double.
struct Product {
  int64_t m, n, k;
  double alpha = 1.0, beta = 0.0;
  std::vector<double> a, b, c0, want;
  Tensor da, db, dc;

  Product(int64_t m_, int64_t n_, int64_t k_, double beta_, uint32_t seed)
      : m(m_), n(n_), k(k_), beta(beta_), a(random_bf16(m * k, seed)), b(random_bf16(k * n, seed + 1)),
        c0(random_bf16(m * n, seed + 2)), want(static_cast<size_t>(m * n)) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t l = 0; l < k; ++l) s += a[static_cast<size_t>(i * k + l)] * b[static_cast<size_t>(l * n + j)];
        want[static_cast<size_t>(i * n + j)] = alpha * s + beta * c0[static_cast<size_t>(i * n + j)];
      }
    }
    da = upload(a), db = upload(b), dc = upload(c0);
  }

  GemmParams params() const {
    GemmParams p;
    p.dtype = kType;
    p.m = m, p.n = n, p.k = k;
    p.a = da.raw_data(), p.lda = k;
    p.b = db.raw_data(), p.ldb = n;
    p.c = dc.raw_data(), p.ldc = n;
    p.alpha = alpha, p.beta = beta;
    return p;
  }

  // ||C - want|| / ||want||.
  double error() const {
    const std::vector<double> got = download(dc);
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < want.size(); ++i) {
      diff += (got[i] - want[i]) * (got[i] - want[i]);
      norm += want[i] * want[i];
    }
    return std::sqrt(diff / norm);
  }
};

constexpr double kTolerance = 1e-2;  // bf16 output

TEST(GemmAutotuneCuda, FirstCallLeavesTheProductAndKeepsItsChoice) {
  LN_REQUIRE_GPU();
  Product first(272, 384, 192, 0.0, 10);
  const GemmParams p = first.params();
  const int count = cuda::gemm_algorithm_count(p);
  ASSERT_GT(count, 0);
  cuda::gemm(p);
  EXPECT_LT(first.error(), kTolerance);
  const int chosen = cuda::gemm_chosen_algorithm(p);
  EXPECT_GE(chosen, 0);
  EXPECT_LT(chosen, count);
  // Same key (shape, layout, alignment), other buffers: no new tuning, the same choice.
  Product second(272, 384, 192, 0.0, 20);
  cuda::gemm(second.params());
  EXPECT_LT(second.error(), kTolerance);
  EXPECT_EQ(cuda::gemm_chosen_algorithm(second.params()), chosen);
}

TEST(GemmAutotuneCuda, AccumulatingCallRunsOnce) {
  LN_REQUIRE_GPU();
  // beta != 0: timing repeated runs would add the product into C once per run.
  Product acc(304, 416, 160, 1.0, 30);
  cuda::gemm(acc.params());
  EXPECT_LT(acc.error(), kTolerance);
  EXPECT_EQ(cuda::gemm_chosen_algorithm(acc.params()), 0);
}

TEST(GemmAutotuneCuda, GraphCaptureRunsWithoutTuning) {
  LN_REQUIRE_GPU();
  Product prod(336, 448, 224, 0.0, 40);
  // The plan (descriptors, the heuristic's proposals) exists before the capture; its first product
  // comes during it.
  ASSERT_GT(cuda::gemm_algorithm_count(prod.params()), 0);
  const cudaStream_t s = cuda::stream(0);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  // Global mode: any synchronising call while capturing, from tuning say, fails the capture.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  try {
    cuda::gemm(prod.params());
  } catch (const Error& e) {
    cudaGraph_t broken = nullptr;
    cudaStreamEndCapture(s, &broken);
    if (broken) cudaGraphDestroy(broken);
    FAIL() << "gemm under capture: " << e.what();
  }
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT_EQ(cuda::gemm_chosen_algorithm(prod.params()), 0);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  EXPECT_LT(prod.error(), kTolerance);
  // The first eager call tunes, and still leaves the product.
  Product eager(336, 448, 224, 0.0, 50);
  cuda::gemm(eager.params());
  EXPECT_LT(eager.error(), kTolerance);
  EXPECT_LT(cuda::gemm_chosen_algorithm(eager.params()), cuda::gemm_algorithm_count(eager.params()));
}

}  // namespace
}  // namespace longnet

#else

TEST(GemmAutotuneCuda, RequiresTheCudaBackend) { LN_REQUIRE_GPU(); }

#endif
