// linear() on the GPU (one cuBLASLt GEMM with the bias epilogue forward; dW with the bias-gradient
// epilogue backward) against the same op on the CPU in f64 from the same rounded inputs.
#include <gtest/gtest.h>

#include "tests/support/gradcheck.h"
#include "tests/support/gpu.h"

#ifdef LONGNET_WITH_CUDA

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "framework/core/profiler.h"
#include "framework/cuda/gemm.h"
#include "framework/ops/ops.h"

namespace longnet {
namespace {

using testing::relative_error;

Tensor random_tensor(const Shape& shape, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<double> v(static_cast<size_t>(numel_of(shape)));
  for (double& x : v) x = dist(gen);
  return from_vector<double>(v, shape);
}

// One problem: x's shape (before the optional swap of its first two dims, which makes rows that
// do not fold), the output features, and which inputs exist and need gradients.
struct Case {
  Shape x;
  int64_t out = 0;
  bool bias = true;
  bool grad_x = true, grad_w = true, grad_b = true;
  bool swap_x = false;
};

// y and the gradients linear() produced, as f64 CPU tensors (undefined where not asked for).
struct Result {
  Tensor y, dx, dw, db;
};

// Runs linear forward and backward on `device` in `dtype` from f64 CPU values.
Result run_linear(const Case& c, const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, DType dtype,
                  Device device) {
  const auto prepare = [&](const Tensor& t, bool grad) {
    Tensor d = t.to(dtype).to(device).detach();  // a leaf of its own even where no copy was made
    if (grad) d.requires_grad_();
    return d;
  };
  const Tensor xd = prepare(x, c.grad_x), wd = prepare(w, c.grad_w);
  const Tensor bd = c.bias ? prepare(b, c.grad_b) : Tensor();
  const Tensor y = linear(c.swap_x ? xd.transpose(0, 1) : xd, wd, bd);
  y.backward(dy.to(dtype).to(device));
  const auto back = [](const Tensor& t) { return t.defined() ? t.to(Device::cpu()).to(DType::F64) : Tensor(); };
  return {back(y), back(xd.grad()), back(wd.grad()), bd.defined() ? back(bd.grad()) : Tensor()};
}

// Output and every needed gradient on cuda:0 in `dtype` within `tol` (relative, in norm) of the
// CPU f64 result from the dtype-rounded inputs.
void expect_matches_cpu(const Case& c, DType dtype, double tol, uint32_t seed) {
  const int64_t in = c.x.back();
  Shape y_shape = c.x;
  if (c.swap_x) std::swap(y_shape[0], y_shape[1]);
  y_shape.back() = c.out;
  const auto rounded = [&](const Tensor& t) { return t.to(dtype).to(DType::F64); };
  const Tensor x = rounded(random_tensor(c.x, seed)), w = rounded(random_tensor({c.out, in}, seed + 1, -0.1, 0.1));
  const Tensor b = rounded(random_tensor({c.out}, seed + 2)), dy = rounded(random_tensor(y_shape, seed + 3));
  SCOPED_TRACE(std::string(dtype_name(dtype)) + " x " + shape_str(c.x) + (c.swap_x ? "^swapped" : "") + " -> " +
               std::to_string(c.out) + (c.bias ? " with bias" : ""));
  const Result ref = run_linear(c, x, w, b, dy, DType::F64, Device::cpu());
  const Result got = run_linear(c, x, w, b, dy, dtype, Device::cuda(0));
  EXPECT_LT(relative_error(got.y, ref.y), tol) << "y";
  ASSERT_EQ(got.dx.defined(), c.grad_x);
  ASSERT_EQ(got.dw.defined(), c.grad_w);
  ASSERT_EQ(got.db.defined(), c.bias && c.grad_b);
  if (c.grad_x) {
    EXPECT_LT(relative_error(got.dx, ref.dx), tol) << "dx";
  }
  if (c.grad_w) {
    EXPECT_LT(relative_error(got.dw, ref.dw), tol) << "dw";
  }
  if (c.bias && c.grad_b) {
    EXPECT_LT(relative_error(got.db, ref.db), tol) << "db";
  }
}

// bf16 stores 8 significant bits (a relative rounding of up to 2^-8 per element); f32 GEMMs run
// without TF32, and dW sums over up to 8192 rows in f32.
constexpr double kBf16Tol = 1e-2, kF32Tol = 2e-5;

TEST(LinearCuda, TransformerShapesMatchCpu) {
  LN_REQUIRE_GPU();
  // The 125M model's FFN up-projection at 8192 tokens, and the down-projection.
  for (DType dtype : {DType::BF16, DType::F32}) {
    const double tol = dtype == DType::BF16 ? kBf16Tol : kF32Tol;
    expect_matches_cpu({.x = {2, 4096, 768}, .out = 3072}, dtype, tol, 1);
    expect_matches_cpu({.x = {1, 2048, 3072}, .out = 768}, dtype, tol, 11);
  }
}

// The residual as the GEMM's C (beta 1, D written apart): the output and every gradient against
// the CPU, at the model's shapes and at odd ones where the epilogue may not fuse.
TEST(LinearCuda, ResidualInTheProductMatchesCpu) {
  LN_REQUIRE_GPU();
  struct Case {
    int64_t rows, in, out;
    bool bias;
  };
  uint32_t seed = 300;
  for (const Case c : {Case{2048, 768, 768, true}, Case{512, 3072, 768, false}, Case{29, 37, 45, true}}) {
    const Tensor x = random_tensor({c.rows, c.in}, ++seed), w = random_tensor({c.out, c.in}, ++seed, -0.05, 0.05);
    const Tensor b = random_tensor({c.out}, ++seed), r = random_tensor({c.rows, c.out}, ++seed);
    const Tensor up = random_tensor({c.rows, c.out}, ++seed);
    for (DType dt : {DType::BF16, DType::F32}) {
      const auto run = [&](Device dev) {
        std::vector<Tensor> in{x.to(dt).to(dev), w.to(dt).to(dev), b.to(dt).to(dev), r.to(dt).to(dev)};
        for (Tensor& t : in) t.requires_grad_(true);
        const Tensor y = linear_residual(in[0], in[1], c.bias ? in[2] : Tensor(), in[3]);
        y.backward(up.to(dt).to(dev));
        std::vector<Tensor> got{y.to(Device::cpu())};
        for (size_t i = 0; i < in.size(); ++i) {
          if (i != 2 || c.bias) got.push_back(in[i].grad().to(Device::cpu()));
        }
        return got;
      };
      const std::vector<Tensor> ref = run(Device::cpu()), got = run(Device::cuda(0));
      const double tol = dt == DType::BF16 ? kBf16Tol : kF32Tol;
      for (size_t i = 0; i < ref.size(); ++i) {
        EXPECT_LT(relative_error(got[i], ref[i]), tol) << "output/gradient " << i << " " << dtype_name(dt) << " rows "
                                                        << c.rows;
      }
    }
  }
}

TEST(LinearCuda, OddShapesMatchCpu) {
  LN_REQUIRE_GPU();
  // Rows and features that leave operands 2-byte aligned, where cuBLASLt may refuse to fuse the
  // epilogues and the separate kernels run instead.
  uint32_t seed = 100;
  for (DType dtype : {DType::BF16, DType::F32}) {
    const double tol = dtype == DType::BF16 ? kBf16Tol : kF32Tol;
    expect_matches_cpu({.x = {3, 29, 37}, .out = 45}, dtype, tol, seed += 10);
    expect_matches_cpu({.x = {5, 37}, .out = 45, .bias = false}, dtype, tol, seed += 10);
    expect_matches_cpu({.x = {37}, .out = 45}, dtype, tol, seed += 10);
    expect_matches_cpu({.x = {7, 13}, .out = 1}, dtype, tol, seed += 10);
    expect_matches_cpu({.x = {1, 1}, .out = 3}, dtype, tol, seed += 10);
  }
}

TEST(LinearCuda, NonFoldableRowsMatchCpu) {
  LN_REQUIRE_GPU();
  for (DType dtype : {DType::BF16, DType::F32}) {
    const double tol = dtype == DType::BF16 ? kBf16Tol : kF32Tol;
    expect_matches_cpu({.x = {64, 3, 96}, .out = 128, .swap_x = true}, dtype, tol, 200);
    expect_matches_cpu({.x = {29, 3, 37}, .out = 45, .swap_x = true}, dtype, tol, 210);
  }
}

TEST(LinearCuda, OnlyNeededGradientsMatchCpu) {
  LN_REQUIRE_GPU();
  for (DType dtype : {DType::BF16, DType::F32}) {
    const double tol = dtype == DType::BF16 ? kBf16Tol : kF32Tol;
    for (const Shape& x : {Shape{4, 256, 128}, Shape{3, 29, 37}}) {
      const int64_t out = x.back() == 128 ? 192 : 45;
      expect_matches_cpu({.x = x, .out = out, .grad_x = false}, dtype, tol, 300);                  // dW with db
      expect_matches_cpu({.x = x, .out = out, .grad_b = false}, dtype, tol, 310);                  // dW alone
      expect_matches_cpu({.x = x, .out = out, .grad_x = false, .grad_w = false}, dtype, tol, 320);  // db alone
      expect_matches_cpu({.x = x, .out = out, .grad_w = false, .grad_b = false}, dtype, tol, 330);  // dx alone
    }
  }
}

TEST(LinearCuda, Bf16BiasGradientAccumulatesInF32) {
  LN_REQUIRE_GPU();
  // A sum of 8192 ones is exactly 8192 in f32 (and in bf16, a power of two); a bf16 accumulator
  // would stop at 256, where adding 1 no longer changes it.
  const int64_t rows = 8192, in = 64, out = 64;
  const Tensor x = random_tensor({8, rows / 8, in}, 400).to(DType::BF16).to(Device::cuda(0));
  const Tensor w = random_tensor({out, in}, 401).to(DType::BF16).to(Device::cuda(0)).requires_grad_();
  const Tensor b = zeros({out}, DType::BF16, Device::cuda(0)).requires_grad_();
  linear(x, w, b).backward(ones({8, rows / 8, out}, DType::BF16, Device::cuda(0)));
  EXPECT_EQ(b.grad().to(Device::cpu()).to(DType::F64).to_vector<double>(), std::vector<double>(out, 8192.0));
  // Values of one sign over 65536 rows: each sum within bf16's final rounding of the f64 sum.
  const int64_t long_rows = 65536;
  const Tensor dy = random_tensor({long_rows, out}, 402, 0.5, 1.5).to(DType::BF16);
  const Tensor xl = random_tensor({long_rows, in}, 403).to(DType::BF16).to(Device::cuda(0));
  const Tensor wl = random_tensor({out, in}, 404).to(DType::BF16).to(Device::cuda(0)).requires_grad_();
  const Tensor bl = zeros({out}, DType::BF16, Device::cuda(0)).requires_grad_();
  linear(xl, wl, bl).backward(dy.to(Device::cuda(0)));
  const auto got = bl.grad().to(Device::cpu()).to(DType::F64).to_vector<double>();
  const auto ref = sum(dy.to(DType::F64), {0}).to_vector<double>();
  for (size_t j = 0; j < ref.size(); ++j) EXPECT_NEAR(got[j], ref[j], 4e-3 * ref[j]) << "column " << j;
}

TEST(LinearCuda, EpiloguesFuseAtTheModelsShapes) {
  LN_REQUIRE_GPU();
  // cuBLASLt proposes fused algorithms for the bias (forward) and the bias gradient (dW) at the
  // 125M model's shapes: otherwise linear() would run them as separate passes over the output.
  const int64_t rows = 8192, in = 768, out = 3072;
  const Tensor x = zeros({rows, in}, DType::BF16, Device::cuda(0)), w = zeros({out, in}, DType::BF16, Device::cuda(0));
  const Tensor bias = zeros({out}, DType::BF16, Device::cuda(0)), y = zeros({rows, out}, DType::BF16, Device::cuda(0));
  const Tensor dw = zeros({out, in}, DType::BF16, Device::cuda(0));
  cuda::GemmParams fwd{.m = rows, .n = out, .k = in, .a = x.raw_data(), .lda = in, .b = w.raw_data(), .ldb = in,
                       .trans_b = true, .c = y.raw_data(), .ldc = out, .epilogue = cuda::GemmEpilogue::Bias,
                       .bias = bias.raw_data()};
  EXPECT_GT(cuda::gemm_algorithm_count(fwd), 0) << cuda::gemm_str(fwd);
  cuda::GemmParams bwd{.m = out, .n = in, .k = rows, .a = y.raw_data(), .lda = out, .trans_a = true,
                       .b = x.raw_data(), .ldb = in, .c = dw.raw_data(), .ldc = in,
                       .epilogue = cuda::GemmEpilogue::BGradA, .bias_grad = bias.raw_data()};
  EXPECT_GT(cuda::gemm_algorithm_count(bwd), 0) << cuda::gemm_str(bwd);
}

TEST(LinearCuda, ProfilesUnderItsNames) {
  LN_REQUIRE_GPU();
  const Tensor x = random_tensor({64, 32}, 500).to(DType::BF16).to(Device::cuda(0)).requires_grad_();
  const Tensor w = random_tensor({16, 32}, 501).to(DType::BF16).to(Device::cuda(0)).requires_grad_();
  const Tensor b = zeros({16}, DType::BF16, Device::cuda(0)).requires_grad_();
  Profiler profiler(Device::cuda(0));
  linear(x, w, b).backward(ones({64, 16}, DType::BF16, Device::cuda(0)));
  const auto entries = profiler.finish();
  const auto calls = [&](const std::string& name) {
    for (const ProfileEntry& e : entries) {
      if (e.name == name) return e.calls;
    }
    return int64_t{0};
  };
  EXPECT_EQ(calls("linear"), 1);
  EXPECT_EQ(calls("LinearBackward"), 1);
}

}  // namespace
}  // namespace longnet

#else

TEST(LinearCuda, RequiresTheCudaBackend) { LN_REQUIRE_GPU(); }

#endif
