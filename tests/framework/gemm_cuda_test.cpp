// The cuBLASLt GEMM entry point against naive double-precision loops: every dtype, transposes,
// padded and odd leading dims, batches with a shared operand, each epilogue (fused or not).
#include <gtest/gtest.h>

#include "tests/support/gpu.h"

#ifdef LONGNET_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "framework/cuda/gemm.h"
#include "framework/ops/copy.h"
#include "framework/ops/factory.h"

namespace longnet {
namespace {

using cuda::GemmEpilogue;
using cuda::GemmParams;

std::vector<double> random_values(int64_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-scale, scale);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = dist(gen);
  return v;
}

// The values as `dtype` stores them, so the reference sees exactly the GPU's inputs.
std::vector<double> rounded_to(const std::vector<double>& v, DType dtype) {
  return from_vector<double>(v, {static_cast<int64_t>(v.size())}).to(dtype).to(DType::F64).to_vector<double>();
}

Tensor upload(const std::vector<double>& v, DType dtype) {
  return from_vector<double>(v, {static_cast<int64_t>(v.size())}).to(dtype).to(Device::cuda(0));
}

std::vector<double> download(const Tensor& t) { return t.to(Device::cpu()).to(DType::F64).to_vector<double>(); }

double gelu_tanh(double x) {
  const double c = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(c * (x + 0.044715 * x * x * x)));
}

double gelu_tanh_grad(double x) {
  const double c = std::sqrt(2.0 / std::numbers::pi);
  const double t = std::tanh(c * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
}

// ||got - ref|| / ||ref|| (absolute when ref is zero).
double relative_error(const std::vector<double>& got, const std::vector<double>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    diff += (got[i] - ref[i]) * (got[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

double tolerance(DType dtype, bool tf32) {
  switch (dtype) {
    case DType::BF16:
    case DType::F16: return 1e-2;
    case DType::F64: return 1e-12;
    default: return tf32 ? 2e-3 : 1e-5;
  }
}

struct Problem {
  DType dtype = DType::F32;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool trans_a = false, trans_b = false;
  bool shared_a = false, shared_b = false;  // one matrix for the whole batch (batch stride 0)
  int64_t pad = 0;                          // elements past the end of every row (ld = cols + pad)
  double alpha = 1.0, beta = 0.0;
  bool tf32 = false;
  GemmEpilogue epilogue = GemmEpilogue::None;
  bool aux = true, bias_grad = true;  // whether the optional epilogue buffers are passed
  bool fuse = true;                   // false: the epilogue always runs as a separate kernel
};

// Relative errors of each output against the reference (0 for outputs the epilogue lacks), and the
// count of C's padding elements that changed (must stay 0).
struct Errors {
  double c = 0.0, aux = 0.0, bias_grad = 0.0;
  int64_t padding_changed = 0;
};

// Runs the problem on the GPU with fresh random operands (seed) and checks it against loops.
Errors run_problem(const Problem& pr, uint32_t seed) {
  const int64_t m = pr.m, n = pr.n, k = pr.k, batch = pr.batch;
  // Leading dims are at least 1, as for any matrix, even with no columns (K == 0).
  const int64_t rows_a = pr.trans_a ? k : m, cols_a = pr.trans_a ? m : k;
  const int64_t rows_b = pr.trans_b ? n : k, cols_b = pr.trans_b ? k : n;
  const int64_t lda = std::max<int64_t>(cols_a, 1) + pr.pad, ldb = std::max<int64_t>(cols_b, 1) + pr.pad;
  const int64_t ldc = n + pr.pad, ld_aux = n + pr.pad;
  const int64_t batch_a = pr.shared_a ? 1 : batch, batch_b = pr.shared_b ? 1 : batch;
  const bool bgrad_a = pr.epilogue == GemmEpilogue::BGradA;

  const auto a = rounded_to(random_values(batch_a * rows_a * lda, seed), pr.dtype);
  const auto b = rounded_to(random_values(batch_b * rows_b * ldb, seed + 1), pr.dtype);
  const auto c0 = rounded_to(random_values(batch * m * ldc, seed + 2), pr.dtype);
  const auto bias = rounded_to(random_values(n, seed + 3), pr.dtype);
  const auto aux0 = rounded_to(random_values(m * ld_aux, seed + 4, 3.0), pr.dtype);
  const auto bg0 = random_values(bgrad_a ? m : n, seed + 5);

  const Tensor da = upload(a, pr.dtype), db = upload(b, pr.dtype), dc = upload(c0, pr.dtype);
  const Tensor dbias = upload(bias, pr.dtype), daux = upload(aux0, pr.dtype), dbg = upload(bg0, pr.dtype);

  GemmParams p;
  p.dtype = pr.dtype;
  p.m = m, p.n = n, p.k = k, p.batch = batch;
  p.a = da.raw_data(), p.lda = lda, p.stride_a = pr.shared_a ? 0 : rows_a * lda, p.trans_a = pr.trans_a;
  p.b = db.raw_data(), p.ldb = ldb, p.stride_b = pr.shared_b ? 0 : rows_b * ldb, p.trans_b = pr.trans_b;
  p.c = dc.raw_data(), p.ldc = ldc, p.stride_c = m * ldc;
  p.alpha = pr.alpha, p.beta = pr.beta, p.tf32 = pr.tf32;
  p.epilogue = pr.epilogue;
  p.bias = dbias.raw_data();
  p.aux = pr.aux ? daux.raw_data() : nullptr;
  p.ld_aux = ld_aux;
  p.bias_grad = pr.bias_grad ? dbg.raw_data() : nullptr;
  p.fuse_epilogue = pr.fuse;
  SCOPED_TRACE(cuda::gemm_str(p));
  cuda::gemm(p);

  const auto op_a = [&](int64_t q, int64_t i, int64_t j) {
    const int64_t base = pr.shared_a ? 0 : q * rows_a * lda;
    return pr.trans_a ? a[static_cast<size_t>(base + j * lda + i)] : a[static_cast<size_t>(base + i * lda + j)];
  };
  const auto op_b = [&](int64_t q, int64_t i, int64_t j) {
    const int64_t base = pr.shared_b ? 0 : q * rows_b * ldb;
    return pr.trans_b ? b[static_cast<size_t>(base + j * ldb + i)] : b[static_cast<size_t>(base + i * ldb + j)];
  };
  std::vector<double> c_ref, aux_ref, bg_ref(static_cast<size_t>(bgrad_a ? m : n), 0.0);
  for (int64_t q = 0; q < batch; ++q) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (int64_t l = 0; l < k; ++l) s += op_a(q, i, l) * op_b(q, l, j);
        double v = pr.alpha * s;
        if (pr.beta != 0.0) v += pr.beta * c0[static_cast<size_t>((q * m + i) * ldc + j)];
        switch (pr.epilogue) {
          case GemmEpilogue::None:
          case GemmEpilogue::BGradA: break;
          case GemmEpilogue::Bias: v += bias[static_cast<size_t>(j)]; break;
          case GemmEpilogue::BiasGelu:
            v += bias[static_cast<size_t>(j)];
            aux_ref.push_back(v);
            v = gelu_tanh(v);
            break;
          case GemmEpilogue::DGeluBGrad:
            v *= gelu_tanh_grad(aux0[static_cast<size_t>(i * ld_aux + j)]);
            bg_ref[static_cast<size_t>(j)] += v;
            break;
        }
        c_ref.push_back(v);
      }
    }
  }
  if (bgrad_a) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t l = 0; l < k; ++l) bg_ref[static_cast<size_t>(i)] += op_a(0, i, l);
    }
  }

  Errors e;
  const auto c = download(dc);
  std::vector<double> c_got;
  for (int64_t r = 0; r < batch * m; ++r) {
    for (int64_t j = 0; j < ldc; ++j) {
      const size_t at = static_cast<size_t>(r * ldc + j);
      if (j < n) {
        c_got.push_back(c[at]);
      } else if (c[at] != c0[at]) {
        ++e.padding_changed;
      }
    }
  }
  e.c = relative_error(c_got, c_ref);
  if (pr.epilogue == GemmEpilogue::BiasGelu && pr.aux) {
    const auto aux = download(daux);
    std::vector<double> aux_got;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) aux_got.push_back(aux[static_cast<size_t>(i * ld_aux + j)]);
    }
    e.aux = relative_error(aux_got, aux_ref);
  }
  if ((pr.epilogue == GemmEpilogue::DGeluBGrad && pr.bias_grad) || bgrad_a) {
    e.bias_grad = relative_error(download(dbg), bg_ref);
  }
  return e;
}

void expect_matches(const Problem& pr, uint32_t seed) {
  const Errors e = run_problem(pr, seed);
  const double tol = tolerance(pr.dtype, pr.tf32);
  EXPECT_LT(e.c, tol);
  EXPECT_LT(e.aux, tol);
  EXPECT_LT(e.bias_grad, tol);
  EXPECT_EQ(e.padding_changed, 0);
}

struct Size3 {
  int64_t m, n, k;
};

// Tensor-core friendly sizes, and odd ones whose rows are not 16-byte aligned.
const std::vector<Size3> kSizes = {{64, 128, 96}, {37, 45, 29}};
const std::vector<DType> kDTypes = {DType::BF16, DType::F32, DType::F64};

TEST(GemmCuda, AllTransposesMatchReference) {
  LN_REQUIRE_GPU();
  uint32_t seed = 1;
  for (DType dtype : kDTypes) {
    for (const Size3& s : kSizes) {
      for (int t = 0; t < 4; ++t) {
        Problem pr{.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .trans_a = (t & 1) != 0, .trans_b = (t & 2) != 0};
        expect_matches(pr, seed += 10);
      }
    }
  }
}

TEST(GemmCuda, AlphaBetaAccumulateIntoC) {
  LN_REQUIRE_GPU();
  uint32_t seed = 100;
  for (DType dtype : kDTypes) {
    for (const Size3& s : kSizes) {
      expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .trans_b = true, .alpha = 0.5, .beta = -2.0},
                     seed += 10);
    }
  }
}

TEST(GemmCuda, PaddedLeadingDimsLeavePaddingAlone) {
  LN_REQUIRE_GPU();
  uint32_t seed = 200;
  for (DType dtype : kDTypes) {
    for (int64_t pad : {3, 8}) {
      for (int t = 0; t < 4; ++t) {
        expect_matches({.dtype = dtype, .m = 40, .n = 24, .k = 32, .trans_a = (t & 1) != 0, .trans_b = (t & 2) != 0,
                        .pad = pad, .beta = 1.0},
                       seed += 10);
      }
    }
  }
}

TEST(GemmCuda, BatchedWithSharedOperand) {
  LN_REQUIRE_GPU();
  uint32_t seed = 300;
  for (DType dtype : kDTypes) {
    for (const Size3& s : kSizes) {
      expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .batch = 3}, seed += 10);
      expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .batch = 3, .trans_a = true, .shared_b = true},
                     seed += 10);
      expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .batch = 4, .trans_b = true, .shared_a = true,
                      .beta = 1.0},
                     seed += 10);
    }
  }
}

TEST(GemmCuda, Float16AndTf32) {
  LN_REQUIRE_GPU();
  uint32_t seed = 400;
  for (const Size3& s : kSizes) {
    expect_matches({.dtype = DType::F16, .m = s.m, .n = s.n, .k = s.k, .trans_a = true}, seed += 10);
    expect_matches({.dtype = DType::F32, .m = s.m, .n = s.n, .k = s.k, .trans_b = true, .tf32 = true}, seed += 10);
  }
  // Large enough K that TF32 rounding shows, still within its tolerance.
  expect_matches({.dtype = DType::F32, .m = 128, .n = 256, .k = 1024, .tf32 = true}, seed += 10);
}

TEST(GemmCuda, BiasEpilogue) {
  LN_REQUIRE_GPU();
  uint32_t seed = 500;
  for (DType dtype : kDTypes) {
    for (const Size3& s : kSizes) {
      for (int t = 0; t < 4; ++t) {
        expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .trans_a = (t & 1) != 0,
                        .trans_b = (t & 2) != 0, .epilogue = GemmEpilogue::Bias},
                       seed += 10);
      }
    }
  }
}

TEST(GemmCuda, BiasGeluEpilogueWithAndWithoutAux) {
  LN_REQUIRE_GPU();
  uint32_t seed = 600;
  for (DType dtype : kDTypes) {
    for (const Size3& s : kSizes) {
      for (bool aux : {true, false}) {
        expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .trans_b = true,
                        .epilogue = GemmEpilogue::BiasGelu, .aux = aux},
                       seed += 10);
      }
    }
  }
  // The (M, 4D) shape of a transformer MLP's first layer, with beta and a padded aux.
  expect_matches({.dtype = DType::BF16, .m = 256, .n = 512, .k = 128, .trans_b = true, .pad = 8, .beta = 1.0,
                  .epilogue = GemmEpilogue::BiasGelu},
                 seed += 10);
}

TEST(GemmCuda, DGeluBGradEpilogue) {
  LN_REQUIRE_GPU();
  uint32_t seed = 700;
  for (DType dtype : kDTypes) {
    for (const Size3& s : kSizes) {
      for (bool bias_grad : {true, false}) {
        expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .epilogue = GemmEpilogue::DGeluBGrad,
                        .bias_grad = bias_grad},
                       seed += 10);
      }
    }
  }
  // dh = dy @ W2 for an MLP: (M, D) @ (D, 4D).
  expect_matches({.dtype = DType::BF16, .m = 256, .n = 512, .k = 128, .epilogue = GemmEpilogue::DGeluBGrad},
                 seed += 10);
}

TEST(GemmCuda, BGradAEpilogue) {
  LN_REQUIRE_GPU();
  uint32_t seed = 800;
  for (DType dtype : kDTypes) {
    for (const Size3& s : kSizes) {
      for (bool trans_a : {true, false}) {
        expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .trans_a = trans_a,
                        .epilogue = GemmEpilogue::BGradA},
                       seed += 10);
      }
    }
  }
  // dW (out, in) = dy^T @ x with db = sum_rows(dy): dy (rows, out), x (rows, in).
  expect_matches({.dtype = DType::BF16, .m = 128, .n = 256, .k = 512, .trans_a = true,
                  .epilogue = GemmEpilogue::BGradA},
                 seed += 10);
}

TEST(GemmCuda, UnfusedEpiloguesMatchReference) {
  LN_REQUIRE_GPU();
  // The separate epilogue kernels, which run wherever cuBLASLt cannot fuse, on shapes it could.
  uint32_t seed = 850;
  for (DType dtype : kDTypes) {
    for (const Size3& s : kSizes) {
      for (bool trans : {true, false}) {
        expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .trans_b = trans, .epilogue = GemmEpilogue::Bias,
                        .fuse = false},
                       seed += 10);
        expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .trans_a = trans,
                        .epilogue = GemmEpilogue::BGradA, .fuse = false},
                       seed += 10);
        expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .trans_b = trans,
                        .epilogue = GemmEpilogue::BiasGelu, .fuse = false},
                       seed += 10);
        expect_matches({.dtype = dtype, .m = s.m, .n = s.n, .k = s.k, .epilogue = GemmEpilogue::DGeluBGrad,
                        .fuse = false},
                       seed += 10);
      }
    }
  }
  // A linear layer's dW with its bias gradient: K (rows) much longer than the output.
  expect_matches({.dtype = DType::BF16, .m = 96, .n = 64, .k = 4096, .trans_a = true,
                  .epilogue = GemmEpilogue::BGradA, .fuse = false},
                 seed += 10);
}

TEST(GemmCuda, EmptyInnerDimScalesC) {
  LN_REQUIRE_GPU();
  for (DType dtype : kDTypes) {
    expect_matches({.dtype = dtype, .m = 5, .n = 7, .k = 0, .batch = 2, .beta = 3.0}, 1);
    expect_matches({.dtype = dtype, .m = 5, .n = 7, .k = 0}, 2);
    expect_matches({.dtype = dtype, .m = 5, .n = 7, .k = 0, .epilogue = GemmEpilogue::Bias}, 3);
    expect_matches({.dtype = dtype, .m = 5, .n = 7, .k = 0, .epilogue = GemmEpilogue::BGradA}, 4);
  }
}

TEST(GemmCuda, RepeatedCallsUseTheirOwnBuffers) {
  LN_REQUIRE_GPU();
  // Same shapes and alignments, so the second call reuses the cached plan with new pointers.
  for (uint32_t seed : {900u, 910u, 920u}) {
    expect_matches({.dtype = DType::BF16, .m = 64, .n = 128, .k = 96, .trans_b = true,
                    .epilogue = GemmEpilogue::BiasGelu},
                   seed);
    expect_matches({.dtype = DType::BF16, .m = 64, .n = 128, .k = 96, .epilogue = GemmEpilogue::DGeluBGrad}, seed);
  }
}

TEST(GemmCuda, EveryProposedAlgorithmIsCorrect) {
  LN_REQUIRE_GPU();
  const int64_t m = 256, n = 192, k = 128;
  const auto a = rounded_to(random_values(m * k, 1), DType::BF16);
  const auto b = rounded_to(random_values(k * n, 2), DType::BF16);
  const Tensor da = upload(a, DType::BF16), db = upload(b, DType::BF16);
  const Tensor dc = Tensor::empty({m, n}, DType::BF16, Device::cuda(0));
  GemmParams p{.m = m, .n = n, .k = k, .a = da.raw_data(), .lda = k, .b = db.raw_data(), .ldb = n,
               .c = dc.raw_data(), .ldc = n};
  std::vector<double> ref(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t l = 0; l < k; ++l) s += a[static_cast<size_t>(i * k + l)] * b[static_cast<size_t>(l * n + j)];
      ref[static_cast<size_t>(i * n + j)] = s;
    }
  }
  const int count = cuda::gemm_algorithm_count(p);
  EXPECT_GT(count, 0);
  EXPECT_LE(count, 16);
  for (int i = 0; i < count; ++i) {
    cuda::gemm_with_algorithm(p, i);
    EXPECT_LT(relative_error(download(dc), ref), 1e-2) << "algorithm " << i;
  }
  try {
    cuda::gemm_with_algorithm(p, count);
    ADD_FAILURE() << "expected an error for algorithm " << count;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[gemm] algorithm"), std::string::npos) << e.what();
  }
}

void expect_gemm_error(const GemmParams& p, const std::string& fragment) {
  try {
    cuda::gemm(p);
    ADD_FAILURE() << "expected an error containing \"" << fragment << "\"";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("[gemm]"), std::string::npos) << what;
    EXPECT_NE(what.find(fragment), std::string::npos) << what;
    EXPECT_NE(what.find("A (37, 29) @ B (29, 45) -> C (37, 45)"), std::string::npos) << what;
  }
}

TEST(GemmCuda, RejectsInvalidParameters) {
  LN_REQUIRE_GPU();
  const Tensor buf = Tensor::empty({4096}, DType::F32, Device::cuda(0));
  const GemmParams ok{.dtype = DType::F32, .m = 37, .n = 45, .k = 29, .a = buf.raw_data(), .lda = 29,
                      .b = buf.raw_data(), .ldb = 45, .c = buf.raw_data(), .ldc = 45};
  GemmParams p = ok;
  p.dtype = DType::I32;
  expect_gemm_error(p, "unsupported dtype");
  p = ok;
  p.lda = 28;
  expect_gemm_error(p, "leading dim");
  p = ok;
  p.ldc = 44;
  expect_gemm_error(p, "leading dim");
  p = ok;
  p.tf32 = true;
  p.dtype = DType::BF16;
  expect_gemm_error(p, "tf32");
  p = ok;
  p.batch = 2;
  p.stride_c = 0;
  expect_gemm_error(p, "stride_c");
  p = ok;
  p.batch = 2;
  p.stride_c = 37 * 45;
  p.epilogue = GemmEpilogue::Bias;
  p.bias = buf.raw_data();
  expect_gemm_error(p, "batch 1");
  p = ok;
  p.epilogue = GemmEpilogue::Bias;
  expect_gemm_error(p, "needs a bias");
  p = ok;
  p.epilogue = GemmEpilogue::DGeluBGrad;
  p.aux = buf.raw_data();
  p.ld_aux = 40;
  expect_gemm_error(p, "aux");
  p = ok;
  p.epilogue = GemmEpilogue::BGradA;
  p.bias_grad = buf.raw_data();
  p.alpha = 2.0;
  expect_gemm_error(p, "alpha 1");
  p = ok;
  p.b = nullptr;
  expect_gemm_error(p, "null operand");
}

}  // namespace
}  // namespace longnet

#else

TEST(GemmCuda, RequiresTheCudaBackend) { LN_REQUIRE_GPU(); }

#endif
