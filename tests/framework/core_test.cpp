// Tensor handles, dtypes, views, factories and printing.
#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

TEST(Core, ViewsShareStorage) {
  Tensor a = arange(0, 12, 1, DType::F32).reshape({3, 4});
  Tensor t = a.transpose(0, 1);
  EXPECT_EQ(t.shape(), (Shape{4, 3}));
  EXPECT_FALSE(t.is_contiguous());
  EXPECT_EQ(t.storage(), a.storage());
  Tensor s = a.slice(1, 1, 4, 2);
  EXPECT_EQ(s.to_vector<float>(), (std::vector<float>{1, 3, 5, 7, 9, 11}));
  fill_(s, -1.0);
  EXPECT_EQ(a.to_vector<float>()[1], -1.0f);
  EXPECT_EQ(t.contiguous().to_vector<float>()[1], 4.0f);
}

TEST(Core, ReshapeCopiesOnlyWhenNeeded) {
  Tensor a = arange(0, 24, 1, DType::F64).reshape({2, 3, 4});
  EXPECT_EQ(a.reshape({6, 4}).storage(), a.storage());
  Tensor t = a.transpose(1, 2);
  EXPECT_THROW(t.view({2, 12}), Error);
  Tensor r = t.reshape({2, 12});
  EXPECT_NE(r.storage(), a.storage());
  EXPECT_EQ(r.to_vector<double>()[1], 4.0);
  EXPECT_EQ(a.reshape({-1}).shape(), (Shape{24}));
}

TEST(Core, DtypeConversionsRoundTrip) {
  Tensor x = tensor({1.5f, -2.25f, 3.0e4f, 1e-3f}, {4});
  EXPECT_EQ(x.to(DType::BF16).to(DType::F32).to_vector<float>()[1], -2.25f);
  EXPECT_EQ(x.to(DType::F16).to(DType::F32).to_vector<float>()[2], 3.0e4f);
  EXPECT_NEAR(x.to(DType::F16).to(DType::F32).to_vector<float>()[3], 1e-3f, 1e-6f);
  EXPECT_EQ(x.to(DType::I32).to_vector<int32_t>()[1], -2);
  EXPECT_EQ(x.to(DType::Bool).to(DType::U8).to_vector<uint8_t>(), (std::vector<uint8_t>{1, 1, 1, 1}));
}

TEST(Core, PhiloxIsReproducible) {
  Generator g1(7), g2(7);
  Tensor a = randn({1000}, DType::F32, Device::cpu(), &g1);
  Tensor b = randn({1000}, DType::F32, Device::cpu(), &g2);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  const double m = mean(a).item();
  EXPECT_NEAR(m, 0.0, 0.1);
  EXPECT_NEAR(mean(mul(a, a)).item(), 1.0, 0.1);
  Tensor u = rand({1000}, DType::F64, Device::cpu(), &g1);
  EXPECT_GE(u.to_vector<double>()[0], 0.0);
  EXPECT_NEAR(mean(u).item(), 0.5, 0.05);
}

TEST(Core, PrintingShowsShapeAndDtype) {
  const std::string s = arange(0, 6, 1, DType::I64).reshape({2, 3}).to_string();
  EXPECT_NE(s.find("shape=(2, 3)"), std::string::npos);
  EXPECT_NE(s.find("dtype=i64"), std::string::npos);
  EXPECT_NE(s.find("[[0, 1, 2],"), std::string::npos);
}

TEST(Autograd, BroadcastMulGradients) {
  using testing::gradcheck;
  using testing::leaf;
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return mul(x[0], x[1]); },
                        {leaf({3, 4}, 1), leaf({4}, 2)}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& x) { return div(x[0].transpose(0, 1), add(exp(x[1]), 1.0)); },
                        {leaf({4, 3}, 3), leaf({1, 4}, 4)}));
}

}  // namespace
}  // namespace longnet

namespace longnet {
namespace {

TEST(Core, DefaultDeviceIsCpuAndScoped) {
  EXPECT_TRUE(default_device().is_cpu());
  EXPECT_TRUE(zeros({2}).device().is_cpu());
  EXPECT_TRUE(Tensor::empty({2}).device().is_cpu());
#ifndef LONGNET_WITH_CUDA
  EXPECT_NE(testing::error_message([] { set_default_device(Device::cuda(0)); }).find("[device] cannot make cuda:0"),
            std::string::npos);
  EXPECT_TRUE(default_device().is_cpu());
#endif
}

}  // namespace
}  // namespace longnet
