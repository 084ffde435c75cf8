// matmul_into: a product written into, or added to, an existing tensor, against naive
// double-precision loops: rows of a larger tensor (the rest untouched), transposed operand views,
// f32 results of 16-bit operands stored unrounded, accumulation, K == 0, errors; on a GPU the same
// through cuBLASLt (beta 1 and an f32 C for bf16 operands).
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/gemm.h"
#endif
#include "framework/ops/matmul.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;

// a (M, K) @ b (K, N) in double from the values the tensors hold, as a CPU f64 tensor.
Tensor naive_product(const Tensor& a, const Tensor& b) {
  const std::vector<double> av = a.contiguous().to(Device::cpu()).to_vector<double>();
  const std::vector<double> bv = b.contiguous().to(Device::cpu()).to_vector<double>();
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < k; ++p) s += av[static_cast<size_t>(i * k + p)] * bv[static_cast<size_t>(p * n + j)];
      c[static_cast<size_t>(i * n + j)] = s;
    }
  }
  return from_vector(c, {m, n}, Device::cpu());
}

Tensor host_f64(const Tensor& t) { return t.to(Device::cpu()).to(DType::F64); }

// Rows [3, 7) of a (10, 7) tensor take a (4, 5) @ (5, 7) product whose right operand is a
// transposed view; the other rows keep their values. Then the same rows accumulate a second
// product. dtype: of the operands and of the result.
void expect_rows_of_a_larger_tensor(Device device, DType dtype, double tol) {
  Generator g(90);
  const Tensor big = randn({10, 7}, DType::F32, Device::cpu(), &g).to(dtype).to(device);
  const Tensor before = host_f64(big);
  const Tensor a = randn({4, 5}, DType::F32, Device::cpu(), &g).to(dtype).to(device);
  const Tensor b = transpose(randn({7, 5}, DType::F32, Device::cpu(), &g).to(dtype).to(device), 0, 1);
  const Tensor out = narrow(big, 0, 3, 4);
  matmul_into(out, a, b);
  const Tensor want = naive_product(a, b);
  EXPECT_TRUE(all_close(host_f64(out), want, tol, tol));
  const Tensor after = host_f64(big);
  EXPECT_TRUE(all_close(narrow(after, 0, 0, 3), narrow(before, 0, 0, 3), 0.0, 0.0));
  EXPECT_TRUE(all_close(narrow(after, 0, 7, 3), narrow(before, 0, 7, 3), 0.0, 0.0));
  // out += a2 @ b
  const Tensor a2 = randn({4, 5}, DType::F32, Device::cpu(), &g).to(dtype).to(device);
  matmul_into(out, a2, b, true);
  EXPECT_TRUE(all_close(host_f64(out), add(want, naive_product(a2, b)), 2 * tol, 2 * tol));
}

TEST(MatmulInto, WritesRowsOfALargerTensorAndAccumulates) {
  expect_rows_of_a_larger_tensor(Device::cpu(), DType::F64, 1e-12);
  expect_rows_of_a_larger_tensor(Device::cpu(), DType::F32, 1e-5);
  expect_rows_of_a_larger_tensor(Device::cpu(), DType::BF16, 2e-2);
}

// f32 results of bf16 operands: 1 + 2^-8 is no bf16 value (their spacing at 1 is 2^-7), so an
// unrounded result shows. Accumulating adds in f32 too.
void expect_f32_results_of_bf16_operands(Device device) {
  const Tensor a = from_vector<float>({1.0f, 0.00390625f, 2.0f, -1.0f}, {2, 2}, device).to(DType::BF16);
  const Tensor b = from_vector<float>({1.0f, 3.0f, 1.0f, 0.5f}, {2, 2}, device).to(DType::BF16);
  const Tensor out = zeros({2, 2}, DType::F32, device);
  matmul_into(out, a, b);
  EXPECT_EQ(out.to(Device::cpu()).to_vector<float>(),
            (std::vector<float>{1.00390625f, 3.001953125f, 1.0f, 5.5f}));
  matmul_into(out, a, b, true);
  EXPECT_EQ(out.to(Device::cpu()).to_vector<float>(), (std::vector<float>{2.0078125f, 6.00390625f, 2.0f, 11.0f}));
  // Larger random operands against the f64 product of their bf16 values.
  Generator g(91);
  const Tensor x = randn({37, 29}, DType::F32, Device::cpu(), &g).to(DType::BF16).to(device);
  const Tensor y = transpose(randn({45, 29}, DType::F32, Device::cpu(), &g).to(DType::BF16).to(device), 0, 1);
  const Tensor c = full({37, 45}, 0.25, DType::F32, device);
  matmul_into(c, x, y, true);
  EXPECT_TRUE(all_close(host_f64(c), add(naive_product(x, y), 0.25), 1e-4, 1e-5));
}

TEST(MatmulInto, F32ResultsOfBf16OperandsAreNotRounded) { expect_f32_results_of_bf16_operands(Device::cpu()); }

TEST(MatmulInto, EmptyInnerDimensionZeroesOrKeeps) {
  const Tensor a = zeros({3, 0}, DType::F64), b = zeros({0, 2}, DType::F64);
  const Tensor out = full({3, 2}, 4.0, DType::F64);
  matmul_into(out, a, b, true);
  for (double v : out.to_vector<double>()) EXPECT_EQ(v, 4.0);
  matmul_into(out, a, b);
  for (double v : out.to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(MatmulInto, Errors) {
  const Tensor a = zeros({3, 4}), b = zeros({4, 5});
  const std::string shape = testing::error_message([&] { matmul_into(zeros({3, 4}), a, b); });
  EXPECT_NE(shape.find("[matmul_into] out (3, 4) cannot hold (3, 4) @ (4, 5)"), std::string::npos) << shape;
  const std::string dtype = testing::error_message([&] { matmul_into(zeros({3, 5}, DType::F64), a, b); });
  EXPECT_NE(dtype.find("[matmul_into] out of f64 for f32 operands"), std::string::npos) << dtype;
  const std::string narrow_out = testing::error_message(
      [&] { matmul_into(zeros({3, 5}, DType::BF16), a.to(DType::F16), b.to(DType::F16)); });
  EXPECT_NE(narrow_out.find("out of bf16 for f16 operands"), std::string::npos) << narrow_out;
  const std::string mixed = testing::error_message([&] { matmul_into(zeros({3, 5}), a, b.to(DType::F64)); });
  EXPECT_NE(mixed.find("[matmul_into]"), std::string::npos) << mixed;
  const std::string stride =
      testing::error_message([&] { matmul_into(transpose(zeros({5, 3}), 0, 1), a, b); });
  EXPECT_NE(stride.find("[matmul_into] out (3, 5) needs unit column stride"), std::string::npos) << stride;
}

// One cuBLASLt call per product: rows of a larger tensor in f32 and bf16, beta 1, and f32 results
// of bf16 operands (the cuBLASLt C dtype that differs from the operands').
TEST(MatmulInto, GpuMatchesTheNaiveProduct) {
  LN_REQUIRE_GPU();
  expect_rows_of_a_larger_tensor(Device::cuda(), DType::F32, 1e-5);
  expect_rows_of_a_larger_tensor(Device::cuda(), DType::BF16, 2e-2);
  expect_f32_results_of_bf16_operands(Device::cuda());
}

#ifdef LONGNET_WITH_CUDA
// cuBLASLt takes a C dtype other than the operands' only as f32 C of 16-bit operands, without an
// epilogue; the error names the C dtype.
TEST(MatmulInto, GpuGemmRejectsOtherResultDtypes) {
  LN_REQUIRE_GPU();
  const Tensor buf = zeros({8, 8}, DType::F32, Device::cuda());
  cuda::GemmParams p;
  p.dtype = DType::BF16;
  p.m = p.n = p.k = 8;
  p.a = p.b = p.c = buf.raw_data();
  p.lda = p.ldb = p.ldc = 8;
  p.c_dtype = DType::F16;
  const std::string half = testing::error_message([&] { cuda::gemm(p); });
  EXPECT_NE(half.find("only f32 for bf16/f16 operands"), std::string::npos) << half;
  EXPECT_NE(half.find("-> f16 C (8, 8)"), std::string::npos) << half;
  p.c_dtype = DType::F32;
  p.epilogue = cuda::GemmEpilogue::Bias;
  p.bias = buf.raw_data();
  const std::string epilogue = testing::error_message([&] { cuda::gemm(p); });
  EXPECT_NE(epilogue.find("without an epilogue"), std::string::npos) << epilogue;
}
#endif

}  // namespace
}  // namespace longnet
