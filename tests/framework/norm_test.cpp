// LayerNorm and RMSNorm: forward against naive loops, gradients of x, weight and bias, errors.
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "framework/ops/norm.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

// Naive norm over the last dim of row-major `x` with `len` columns; empty w/b mean 1/0.
std::vector<double> naive_norm(const std::vector<double>& x, size_t len, const std::vector<double>& w,
                               const std::vector<double>& b, double eps, bool rms) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r * len < x.size(); ++r) {
    double mu = 0.0, var = 0.0;
    if (!rms) {
      for (size_t j = 0; j < len; ++j) mu += x[r * len + j];
      mu /= static_cast<double>(len);
    }
    for (size_t j = 0; j < len; ++j) var += (x[r * len + j] - mu) * (x[r * len + j] - mu);
    var /= static_cast<double>(len);
    for (size_t j = 0; j < len; ++j) {
      y[r * len + j] = (x[r * len + j] - mu) / std::sqrt(var + eps) * (w.empty() ? 1.0 : w[j]) +
                       (b.empty() ? 0.0 : b[j]);
    }
  }
  return y;
}

std::vector<double> values(const Tensor& t) { return t.defined() ? t.to_vector<double>() : std::vector<double>{}; }

Tensor naive_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps) {
  return from_vector(naive_norm(x.to_vector<double>(), static_cast<size_t>(x.size(-1)), values(w), values(b), eps,
                                false),
                     x.shape());
}

Tensor naive_rms_norm(const Tensor& x, const Tensor& w, double eps) {
  return from_vector(
      naive_norm(x.to_vector<double>(), static_cast<size_t>(x.size(-1)), values(w), {}, eps, true), x.shape());
}

TEST(Norm, LayerNormForwardMatchesNaiveLoop) {
  Generator g(21);
  const Tensor x = add(mul(randn({2, 3, 7}, DType::F64, Device::cpu(), &g), 2.0), 5.0);
  const Tensor w = randn({7}, DType::F64, Device::cpu(), &g), b = randn({7}, DType::F64, Device::cpu(), &g);
  EXPECT_TRUE(all_close(layer_norm(x, w, b, 1e-5), naive_layer_norm(x, w, b, 1e-5), 1e-12, 1e-10));
  EXPECT_TRUE(all_close(layer_norm(x, Tensor(), Tensor(), 0.1), naive_layer_norm(x, Tensor(), Tensor(), 0.1),
                        1e-12, 1e-10));
  EXPECT_TRUE(all_close(layer_norm(x, w, Tensor(), 1e-5), naive_layer_norm(x, w, Tensor(), 1e-5), 1e-12, 1e-10));
}

TEST(Norm, RmsNormForwardMatchesNaiveLoop) {
  Generator g(22);
  const Tensor x = randn({4, 9}, DType::F64, Device::cpu(), &g);
  const Tensor w = randn({9}, DType::F64, Device::cpu(), &g);
  EXPECT_TRUE(all_close(rms_norm(x, w, 1e-6), naive_rms_norm(x, w, 1e-6), 1e-12, 1e-10));
  EXPECT_TRUE(all_close(rms_norm(x, Tensor(), 0.5), naive_rms_norm(x, Tensor(), 0.5), 1e-12, 1e-10));
}

TEST(Norm, LargeOffsetDoesNotCancelInF32) {
  // Rows far from zero: a one-pass E[x^2] - E[x]^2 in f32 would lose every digit here.
  Generator g(23);
  const Tensor x = add(randn({300, 130}, DType::F32, Device::cpu(), &g), 1.0e4);
  const Tensor w = randn({130}, DType::F32, Device::cpu(), &g), b = randn({130}, DType::F32, Device::cpu(), &g);
  EXPECT_TRUE(all_close(layer_norm(x, w, b, 1e-5), naive_layer_norm(x, w, b, 1e-5), 5e-3, 5e-3));
}

TEST(Norm, LayerNormGradientsContiguous) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], x[2], 1e-5); },
                        {leaf({3, 5}, 1), leaf({5}, 2), leaf({5}, 3)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return layer_norm(x[0], Tensor(), Tensor(), 1e-5); },
                        {leaf({2, 2, 4}, 4)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return layer_norm(x[0], x[1], Tensor(), 1e-5); },
                        {leaf({3, 4}, 5), leaf({4}, 6)}));
}

TEST(Norm, RmsNormGradientsContiguous) {
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return rms_norm(x[0], x[1], 1e-6); },
                        {leaf({3, 5}, 7), leaf({5}, 8)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return rms_norm(x[0], Tensor(), 1e-6); },
                        {leaf({2, 4}, 9)}));
}

TEST(Norm, GradientsNonContiguousAndBroadcastParams) {
  // x transposed, weight a strided slice, bias broadcast from one value.
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& x) {
        return layer_norm(x[0].transpose(0, 1), x[1].slice(0, 0, 8, 2), x[2].expand({4}), 1e-5);
      },
      {leaf({4, 3}, 10), leaf({8}, 11), leaf({1}, 12)}));
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& x) { return rms_norm(x[0].slice(1, 1, 7, 2), x[1].expand({3}), 1e-6); },
      {leaf({2, 7}, 13), leaf({1}, 14)}));
}

TEST(Norm, GeluNormsEqualTheNormOfGelu) {
  // Against the unfused composition in f64, forward and every gradient; and by finite differences.
  Generator g(25);
  const Tensor x = mul(randn({5, 11}, DType::F64, Device::cpu(), &g), 2.0);
  const Tensor w = randn({11}, DType::F64, Device::cpu(), &g), b = randn({11}, DType::F64, Device::cpu(), &g);
  const Tensor dy = randn({5, 11}, DType::F64, Device::cpu(), &g);
  EXPECT_TRUE(all_close(gelu_layer_norm(x, w, b, 1e-5), layer_norm(gelu(x), w, b, 1e-5), 1e-12, 1e-10));
  EXPECT_TRUE(all_close(gelu_rms_norm(x, w, 1e-6), rms_norm(gelu(x), w, 1e-6), 1e-12, 1e-10));
  const auto grads = [&](const std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>& f) {
    const Tensor xl = x.detach().requires_grad_(), wl = w.detach().requires_grad_(), bl = b.detach().requires_grad_();
    sum(mul(f(xl, wl, bl), dy)).backward();
    return std::vector<Tensor>{xl.grad(), wl.grad(), bl.grad()};
  };
  const std::vector<Tensor> fused = grads([](const Tensor& a, const Tensor& w, const Tensor& b) {
    return gelu_layer_norm(a, w, b, 1e-5);
  });
  const std::vector<Tensor> plain = grads([](const Tensor& a, const Tensor& w, const Tensor& b) {
    return layer_norm(gelu(a), w, b, 1e-5);
  });
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(all_close(fused[i], plain[i], 1e-12, 1e-10)) << "input " << i;
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& t) { return gelu_layer_norm(t[0], t[1], t[2], 1e-5); },
                        {leaf({3, 6}, 26), leaf({6}, 27), leaf({6}, 28)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& t) { return gelu_rms_norm(t[0], t[1], 1e-6); },
                        {leaf({3, 6}, 29), leaf({6}, 30)}));
}

TEST(Norm, WeightGradientIsDeterministicAcrossThreadCounts) {
  Generator g(24);
  const Tensor x0 = randn({257, 130}, DType::F32, Device::cpu(), &g);
  const Tensor dy = randn({257, 130}, DType::F32, Device::cpu(), &g);
  const Tensor w0 = randn({130}, DType::F32, Device::cpu(), &g);
  auto grads = [&](int threads) {
    const int prev = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    Tensor b = zeros({130}).requires_grad_(true);
    layer_norm(x, w, b, 1e-5).backward(dy);
    omp_set_num_threads(prev);
    return std::vector<Tensor>{x.grad(), w.grad(), b.grad()};
  };
  const auto one = grads(1), two = grads(2);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(one[i].to_vector<float>(), two[i].to_vector<float>()) << i;
  // dbias is the column sum of dy; dweight the column sum of dy * xhat.
  const auto gy = dy.to_vector<double>();
  const auto xhat = naive_norm(x0.to_vector<double>(), 130, {}, {}, 1e-5, false);
  std::vector<double> db(130, 0.0), dw(130, 0.0);
  for (size_t i = 0; i < gy.size(); ++i) {
    db[i % 130] += gy[i];
    dw[i % 130] += gy[i] * xhat[i];
  }
  EXPECT_TRUE(all_close(one[2], from_vector(db, {130}), 1e-4, 1e-5));
  EXPECT_TRUE(all_close(one[1], from_vector(dw, {130}), 1e-4, 1e-5));
}

TEST(Norm, Bf16ForwardWithinRounding) {
  Generator g(25);
  const Tensor x = randn({5, 64}, DType::F32, Device::cpu(), &g).to(DType::BF16);
  const Tensor w = randn({64}, DType::F32, Device::cpu(), &g).to(DType::BF16);
  const Tensor b = randn({64}, DType::F32, Device::cpu(), &g).to(DType::BF16);
  const Tensor y = layer_norm(x, w, b, 1e-5);
  EXPECT_EQ(y.dtype(), DType::BF16);
  EXPECT_TRUE(all_close(y, naive_layer_norm(x.to(DType::F64), w.to(DType::F64), b.to(DType::F64), 1e-5), 3e-2, 2e-2));
  const Tensor r = rms_norm(x, w, 1e-6);
  EXPECT_EQ(r.dtype(), DType::BF16);
  EXPECT_TRUE(all_close(r, naive_rms_norm(x.to(DType::F64), w.to(DType::F64), 1e-6), 3e-2, 2e-2));
}

TEST(Norm, Errors) {
  const std::string w_err = testing::error_message([] { layer_norm(zeros({3, 5}), ones({4}), Tensor()); });
  EXPECT_NE(w_err.find("[layer_norm] weight of shape (4)"), std::string::npos) << w_err;
  EXPECT_NE(w_err.find("(3, 5)"), std::string::npos) << w_err;
  const std::string b_err = testing::error_message([] { layer_norm(zeros({3, 5}), ones({5}), ones({5, 1})); });
  EXPECT_NE(b_err.find("[layer_norm] bias of shape (5, 1)"), std::string::npos) << b_err;
  const std::string dt_err = testing::error_message([] { rms_norm(zeros({3, 5}), ones({5}, DType::F64)); });
  EXPECT_NE(dt_err.find("[rms_norm] dtype mismatch"), std::string::npos) << dt_err;
  const std::string int_err = testing::error_message([] { rms_norm(zeros({3, 5}, DType::I32), Tensor()); });
  EXPECT_NE(int_err.find("[rms_norm]"), std::string::npos) << int_err;
  EXPECT_NE(int_err.find("(3, 5)"), std::string::npos) << int_err;
  const std::string scalar_err = testing::error_message([] { layer_norm(zeros({}), Tensor(), Tensor()); });
  EXPECT_NE(scalar_err.find("[layer_norm] needs a non-empty last dim, got ()"), std::string::npos) << scalar_err;
}

}  // namespace
}  // namespace longnet
