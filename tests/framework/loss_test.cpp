// Cross-entropy: forward against a naive loop, gradients, ignore_index, target validation; the
// kernels on rows laid out with a stride above the class count (CPU, and CUDA against the CPU).
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/cpu/loss.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/loss.h"
#endif
#include "framework/ops/loss.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

// Mean of logsumexp(row) - row[target] over rows whose target is not `ignore`; 0 if none.
double naive_cross_entropy(const std::vector<double>& logits, const std::vector<int64_t>& targets, size_t classes,
                           int64_t ignore) {
  double total = 0.0;
  int count = 0;
  for (size_t r = 0; r < targets.size(); ++r) {
    if (targets[r] == ignore) continue;
    double m = logits[r * classes];
    for (size_t j = 0; j < classes; ++j) m = std::max(m, logits[r * classes + j]);
    double s = 0.0;
    for (size_t j = 0; j < classes; ++j) s += std::exp(logits[r * classes + j] - m);
    total += m + std::log(s) - logits[r * classes + static_cast<size_t>(targets[r])];
    ++count;
  }
  return count ? total / count : 0.0;
}

TEST(CrossEntropy, ForwardMatchesNaiveLoop) {
  Generator g(31);
  const Tensor x = mul(randn({6, 5}, DType::F64, Device::cpu(), &g), 2.0);
  const std::vector<int64_t> t = {0, 4, -100, 2, 3, 1};
  const Tensor loss = cross_entropy(x, from_vector(t, {6}));
  EXPECT_EQ(loss.shape(), Shape{});
  EXPECT_EQ(loss.dtype(), DType::F64);
  EXPECT_NEAR(loss.item(), naive_cross_entropy(x.to_vector<double>(), t, 5, -100), 1e-12);
}

TEST(CrossEntropy, LeadingDimsAndI32TargetsAndCustomIgnoreIndex) {
  Generator g(32);
  const Tensor x = randn({2, 3, 4}, DType::F32, Device::cpu(), &g);
  const std::vector<int64_t> t = {0, 1, 2, 3, 2, 2};
  const Tensor t32 = from_vector(std::vector<int32_t>(t.begin(), t.end()), {2, 3});
  const Tensor loss = cross_entropy(x, t32, 2);
  EXPECT_EQ(loss.dtype(), DType::F32);
  EXPECT_NEAR(loss.item(), naive_cross_entropy(x.to_vector<double>(), t, 4, 2), 1e-6);
}

TEST(CrossEntropy, ManyRowsTakeTheParallelPath) {
  Generator g(33);
  const Tensor x = randn({500, 97}, DType::F32, Device::cpu(), &g);
  const Tensor t = randint(0, 97, {500}, DType::I64, Device::cpu(), &g);
  EXPECT_NEAR(cross_entropy(x, t).item(),
              naive_cross_entropy(x.to_vector<double>(), t.to_vector<int64_t>(), 97, -100), 1e-5);
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  const Tensor x = from_vector<double>({1000.0, 0.0, -1000.0, 500.0}, {2, 2});
  const Tensor loss = cross_entropy(x, from_vector<int64_t>({1, 0}, {2}));
  // Row losses 1000 and 1500 (each plus a log1p term far below double precision).
  EXPECT_NEAR(loss.item(), 1250.0, 1e-9);
}

TEST(CrossEntropy, GradientsContiguous) {
  const Tensor t = from_vector<int64_t>({1, 3, 0}, {3});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return cross_entropy(x[0], t); }, {leaf({3, 4}, 1)}));
  const Tensor t2 = from_vector<int32_t>({2, -1, 0, 1}, {2, 2});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return cross_entropy(x[0], t2, -1); },
                        {leaf({2, 2, 3}, 2)}));
}

TEST(CrossEntropy, GradientsNonContiguous) {
  const Tensor t = from_vector<int64_t>({4, 0, 2}, {3});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return cross_entropy(x[0].transpose(0, 1), t); },
                        {leaf({5, 3}, 3)}));
  const Tensor t3 = from_vector<int64_t>({2, 0, 1}, {3});
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return cross_entropy(x[0].slice(1, 1, 7, 2), t3); },
                        {leaf({3, 7}, 4)}));
}

TEST(CrossEntropy, IgnoredRowsGetZeroGradient) {
  Generator g(34);
  const Tensor x = randn({4, 3}, DType::F64, Device::cpu(), &g).requires_grad_(true);
  const std::vector<int64_t> t = {2, -100, 0, -100};
  cross_entropy(x, from_vector(t, {4})).backward();
  const auto gx = x.grad().to_vector<double>();
  const auto xv = x.to_vector<double>();
  for (size_t r = 0; r < 4; ++r) {
    double s = 0.0;
    for (size_t j = 0; j < 3; ++j) s += std::exp(xv[r * 3 + j]);
    for (size_t j = 0; j < 3; ++j) {
      // (softmax - onehot) / count with count = 2 non-ignored rows.
      const double want = t[r] == -100 ? 0.0 : (std::exp(xv[r * 3 + j]) / s - (t[r] == int64_t(j))) / 2.0;
      EXPECT_NEAR(gx[r * 3 + j], want, 1e-12) << r << "," << j;
    }
  }
}

TEST(CrossEntropy, AllIgnoredGivesZeroLossAndZeroGradient) {
  const Tensor x = leaf({3, 4}, 5);
  const Tensor loss = cross_entropy(x, full({3}, -100, DType::I64));
  EXPECT_EQ(loss.item(), 0.0);
  loss.backward();
  ASSERT_TRUE(x.grad().defined());
  for (double v : x.grad().to_vector<double>()) EXPECT_EQ(v, 0.0);
}

TEST(CrossEntropy, Bf16LogitsGiveF32Loss) {
  Generator g(35);
  const Tensor x = randn({8, 50}, DType::F32, Device::cpu(), &g).to(DType::BF16).requires_grad_(true);
  const Tensor t = randint(0, 50, {8}, DType::I64, Device::cpu(), &g);
  const Tensor loss = cross_entropy(x, t);
  EXPECT_EQ(loss.dtype(), DType::F32);
  EXPECT_NEAR(loss.item(), naive_cross_entropy(x.to_vector<double>(), t.to_vector<int64_t>(), 50, -100), 1e-4);
  loss.backward();
  EXPECT_EQ(x.grad().dtype(), DType::BF16);
  EXPECT_EQ(x.grad().shape(), (Shape{8, 50}));
}

TEST(CrossEntropy, Errors) {
  const Tensor x = zeros({3, 5});
  const std::string range_err = testing::error_message([&] { cross_entropy(x, from_vector<int64_t>({0, 7, 1}, {3})); });
  EXPECT_NE(range_err.find("[cross_entropy] target id 7"), std::string::npos) << range_err;
  EXPECT_NE(range_err.find("(3, 5)"), std::string::npos) << range_err;
  const std::string neg_err = testing::error_message([&] { cross_entropy(x, from_vector<int32_t>({0, 1, -3}, {3})); });
  EXPECT_NE(neg_err.find("target id -3"), std::string::npos) << neg_err;
  const std::string shape_err = testing::error_message([&] { cross_entropy(x, from_vector<int64_t>({0, 1}, {2})); });
  EXPECT_NE(shape_err.find("[cross_entropy] logits (3, 5) need targets of shape (3), got (2)"), std::string::npos)
      << shape_err;
  const std::string dtype_err = testing::error_message([&] { cross_entropy(x, zeros({3})); });
  EXPECT_NE(dtype_err.find("[cross_entropy] targets must be i32 or i64, got f32"), std::string::npos) << dtype_err;
  const std::string logit_err = testing::error_message([&] { cross_entropy(zeros({3, 5}, DType::I64), zeros({3}, DType::I64)); });
  EXPECT_NE(logit_err.find("[cross_entropy]"), std::string::npos) << logit_err;
}

// The values of dense (rows, classes) laid out with rows `ld` apart, every pad element `pad`.
template <class T>
std::vector<T> with_row_stride(const std::vector<T>& dense, int64_t rows, int64_t classes, int64_t ld, T pad) {
  std::vector<T> out(static_cast<size_t>(rows * ld), pad);
  for (int64_t r = 0; r < rows; ++r) {
    std::copy_n(dense.begin() + r * classes, classes, out.begin() + r * ld);
  }
  return out;
}

// Padded rows give the contiguous layout's lse, loss and dlogits exactly, whether the gradient
// goes to another buffer or over the logits; the pad is neither read (its huge values would
// change the lse) nor written.
template <class T>
void expect_row_stride_is_layout_only(DType dtype) {
  const int64_t rows = 37, classes = 97, ld = 104;
  const T pad = T(1e4);
  Generator g(36);
  const std::vector<T> dense = mul(randn({rows, classes}, dtype, Device::cpu(), &g), 3.0).to_vector<T>();
  std::vector<int64_t> t = randint(0, classes, {rows}, DType::I64, Device::cpu(), &g).to_vector<int64_t>();
  t[3] = t[20] = -100;
  const std::vector<T> padded = with_row_stride(dense, rows, classes, ld, pad);

  std::vector<T> lse_dense(rows), lse_padded(rows, T(-1));
  const cpu::CrossEntropySum want =
      cpu::cross_entropy_forward({dense.data(), t.data(), lse_dense.data(), dtype, DType::I64, rows, classes, -100});
  const cpu::CrossEntropySum got = cpu::cross_entropy_forward(
      {padded.data(), t.data(), lse_padded.data(), dtype, DType::I64, rows, classes, -100, ld});
  EXPECT_EQ(got.loss, want.loss);
  EXPECT_EQ(got.count, want.count);
  EXPECT_EQ(got.count, rows - 2);
  EXPECT_EQ(lse_padded, lse_dense);

  std::vector<T> d_dense(dense.size());
  cpu::cross_entropy_backward(
      {dense.data(), t.data(), lse_dense.data(), d_dense.data(), dtype, DType::I64, rows, classes, -100, 0.25});
  const std::vector<T> want_padded = with_row_stride(d_dense, rows, classes, ld, pad);
  std::vector<T> d_padded(padded.size(), pad);
  cpu::cross_entropy_backward(
      {padded.data(), t.data(), lse_padded.data(), d_padded.data(), dtype, DType::I64, rows, classes, -100, 0.25, ld});
  EXPECT_EQ(d_padded, want_padded);
  std::vector<T> in_place = padded;
  cpu::cross_entropy_backward(
      {in_place.data(), t.data(), lse_padded.data(), in_place.data(), dtype, DType::I64, rows, classes, -100, 0.25, ld});
  EXPECT_EQ(in_place, want_padded);
}

TEST(CrossEntropy, KernelsReadAndWriteRowsThroughTheirStride) {
  expect_row_stride_is_layout_only<double>(DType::F64);
  expect_row_stride_is_layout_only<float>(DType::F32);
}

TEST(CrossEntropy, KernelsRejectAStrideBelowTheClasses) {
  const std::vector<float> x(12, 0.0f);
  std::vector<float> lse(3), dx(12);
  const std::vector<int64_t> t = {0, 1, 2};
  const std::string fwd = testing::error_message([&] {
    cpu::cross_entropy_forward({x.data(), t.data(), lse.data(), DType::F32, DType::I64, 3, 4, -100, 3});
  });
  EXPECT_NE(fwd.find("row stride 3 is below the 4 classes"), std::string::npos) << fwd;
  const std::string bwd = testing::error_message([&] {
    cpu::cross_entropy_backward({x.data(), t.data(), lse.data(), dx.data(), DType::F32, DType::I64, 3, 4, -100, 1.0, 2});
  });
  EXPECT_NE(bwd.find("row stride 2 is below the 4 classes"), std::string::npos) << bwd;
}

#ifdef LONGNET_WITH_CUDA
// The CUDA kernels on padded rows against the CPU kernels on the contiguous rows of the same
// values: an odd stride (rows start at every alignment) and the LM head's 50257 padded to 50264,
// in f32 and bf16, the gradient in place and into another buffer; the pad is left as it was.
TEST(CrossEntropy, GpuKernelsTakeARowStride) {
  LN_REQUIRE_GPU();
  const Device gpu = Device::cuda();
  const int64_t rows = 48;
  const double pad = 8192.0;  // exact in bf16, and far above every logit
  struct Layout {
    int64_t classes, ld;
  };
  for (const DType dtype : {DType::F32, DType::BF16}) {
    for (const Layout l : {Layout{1001, 1009}, Layout{50257, 50264}}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + " classes " + std::to_string(l.classes) + " ld " +
                   std::to_string(l.ld));
      Generator g(37);
      // The values the GPU sees, in f32 for the CPU reference.
      const Tensor dense = mul(randn({rows, l.classes}, DType::F32, Device::cpu(), &g), 3.0).to(dtype).to(DType::F32);
      std::vector<int64_t> t = randint(0, l.classes, {rows}, DType::I64, Device::cpu(), &g).to_vector<int64_t>();
      t[1] = t[30] = -100;
      const Tensor padded_cpu = full({rows, l.ld}, pad, dtype, Device::cpu());
      copy_(narrow(padded_cpu, 1, 0, l.classes), dense.to(dtype));
      const Tensor logits = padded_cpu.to(gpu), tg = from_vector(t, {rows}, gpu);
      const Tensor lse = Tensor::empty({rows}, DType::F32, gpu), row_loss = Tensor::empty({rows}, DType::F32, gpu);
      cuda::cross_entropy_rows(gpu.index,
                               {logits.raw_data(), tg.raw_data(), lse.raw_data(), dtype, DType::I64, rows, l.classes,
                                -100, l.ld},
                               row_loss.raw_data());

      std::vector<float> want_lse(rows);
      const std::vector<float> dense_v = dense.to_vector<float>();
      const cpu::CrossEntropySum want = cpu::cross_entropy_forward(
          {dense_v.data(), t.data(), want_lse.data(), DType::F32, DType::I64, rows, l.classes, -100});
      EXPECT_TRUE(all_close(lse.to(Device::cpu()), from_vector(want_lse, {rows}), 1e-4, 1e-5));
      const std::vector<float> row_loss_v = row_loss.to(Device::cpu()).to_vector<float>();
      double loss_sum = 0.0;
      for (float v : row_loss_v) loss_sum += v;
      EXPECT_NEAR(loss_sum, want.loss, 1e-5 * std::abs(want.loss));

      // grad 2 over the counted rows.
      std::vector<float> want_d(dense_v.size());
      cpu::cross_entropy_backward({dense_v.data(), t.data(), want_lse.data(), want_d.data(), DType::F32, DType::I64,
                                   rows, l.classes, -100, 2.0 / static_cast<double>(want.count)});
      const Tensor want_dl = from_vector(want_d, {rows, l.classes});
      const double tol = (dtype == DType::F32 ? 1e-5 : 1e-2) * 2.0 / static_cast<double>(want.count);
      const Tensor grad = scalar_tensor(2.0, DType::F32, gpu);
      const Tensor count = scalar_tensor(static_cast<double>(want.count), DType::I64, gpu);
      for (const bool in_place : {true, false}) {
        SCOPED_TRACE(in_place ? "in place" : "into another buffer");
        const Tensor out = in_place ? logits.clone() : full({rows, l.ld}, pad, dtype, gpu);
        const Tensor in = in_place ? out : logits;
        cuda::cross_entropy_backward(gpu.index,
                                     {in.raw_data(), tg.raw_data(), lse.raw_data(), out.raw_data(), dtype, DType::I64,
                                      rows, l.classes, -100, 1.0, l.ld},
                                     grad.raw_data(), count.data<int64_t>());
        const Tensor got = out.to(Device::cpu()).to(DType::F32);
        EXPECT_TRUE(all_close(narrow(got, 1, 0, l.classes).contiguous(), want_dl, tol, 0.0));
        for (float v : narrow(got, 1, l.classes, l.ld - l.classes).contiguous().to_vector<float>()) {
          ASSERT_EQ(v, static_cast<float>(pad));
        }
      }
    }
  }
}
#endif

}  // namespace
}  // namespace longnet
