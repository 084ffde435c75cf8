// AccumulateGrad's ownership rule: a leaf's first gradient adopts an incoming tensor that nothing
// else references (no copy), and copies any gradient the caller, the graph or another leaf still
// holds, or that is a slice of a larger buffer, so the leaf's gradient never aliases them.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/ops/ops.h"

namespace longnet {
namespace {

// A differentiable identity whose backward returns make(incoming gradient), noting where the
// returned tensor's data lives.
class ProbeBackward final : public autograd::Node {
 public:
  explicit ProbeBackward(std::function<Tensor(const Tensor&)> make) : make_(std::move(make)) {}
  std::string name() const override { return "ProbeBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    Tensor out = make_(grads[0]);
    returned = out.raw_data();
    return {out};
  }

  const void* returned = nullptr;

 private:
  std::function<Tensor(const Tensor&)> make_;
};

Tensor through(const Tensor& x, const std::shared_ptr<ProbeBackward>& node) {
  Tensor y = x.detach();
  autograd::record(node, {x}, {y});
  return y;
}

Tensor cpu_leaf(const std::vector<double>& values) {
  Tensor t = from_vector<float>(std::vector<float>(values.begin(), values.end()),
                                {static_cast<int64_t>(values.size())}, Device::cpu());
  t.requires_grad_();
  return t;
}

std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

TEST(AccumulateGrad, AdoptsAFreshGradientWithoutCopying) {
  const Tensor x = cpu_leaf({1, 2, 3});
  auto node = std::make_shared<ProbeBackward>([](const Tensor& g) { return mul(g, 2.0); });
  sum(through(x, node)).backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(values(x.grad()), (std::vector<double>{2, 2, 2}));
  EXPECT_EQ(x.grad().raw_data(), node->returned);
}

TEST(AccumulateGrad, CopiesAGradientTheGraphStillHolds) {
  const Tensor x = cpu_leaf({1, 2, 3});
  Tensor kept;
  auto node = std::make_shared<ProbeBackward>([&kept](const Tensor& g) {
    kept = mul(g, 2.0);
    return kept;
  });
  sum(through(x, node)).backward();
  EXPECT_NE(x.grad().raw_data(), kept.raw_data());
  fill_(kept, 5.0);
  EXPECT_EQ(values(x.grad()), (std::vector<double>{2, 2, 2}));
}

TEST(AccumulateGrad, CopiesASliceOfALargerBuffer) {
  const Tensor x = cpu_leaf({1, 2, 3});
  auto node = std::make_shared<ProbeBackward>([](const Tensor& g) {
    // Nothing else holds the buffer, but adopting the slice would keep all of it alive.
    return full({8}, 2.0, g.dtype(), g.device()).narrow(0, 1, 3);
  });
  sum(through(x, node)).backward();
  EXPECT_NE(x.grad().raw_data(), node->returned);
  EXPECT_EQ(x.grad().storage()->nbytes(), 3 * sizeof(float));
  EXPECT_EQ(values(x.grad()), (std::vector<double>{2, 2, 2}));
}

TEST(AccumulateGrad, CallersRootGradientPassedThroughIsCopied) {
  const Tensor x = cpu_leaf({1, 2, 3});
  const Tensor c = from_vector<float>({10, 20, 30}, {3}, Device::cpu());
  // add passes its incoming gradient on as the same tensor: the caller's.
  const Tensor g = from_vector<float>({4, 5, 6}, {3}, Device::cpu());
  add(x, c).backward(g);
  EXPECT_NE(x.grad().storage(), g.storage());
  fill_(g, 9.0);
  EXPECT_EQ(values(x.grad()), (std::vector<double>{4, 5, 6}));

  // A view of the caller's gradient (a new handle on the same storage) is copied as well.
  const Tensor w = cpu_leaf({1, 2, 3, 4, 5, 6});
  const Tensor g2 = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3}, Device::cpu());
  w.reshape({2, 3}).backward(g2);
  EXPECT_NE(w.grad().storage(), g2.storage());
  fill_(g2, 0.0);
  EXPECT_EQ(values(w.grad()), (std::vector<double>{1, 2, 3, 4, 5, 6}));
}

TEST(AccumulateGrad, TwoLeavesGivenOneTensorGetSeparateGradients) {
  const Tensor a = cpu_leaf({1, 2});
  const Tensor b = cpu_leaf({3, 4});
  // add's backward hands the same fresh tensor to both leaves: one may adopt it, not both.
  sum(mul(add(a, b), 3.0)).backward();
  EXPECT_NE(a.grad().storage(), b.grad().storage());
  fill_(a.grad(), -1.0);
  EXPECT_EQ(values(b.grad()), (std::vector<double>{3, 3}));
}

TEST(AccumulateGrad, AdoptedGradientAccumulatesLaterBackwards) {
  const Tensor x = cpu_leaf({1, 2, 3});
  auto first = std::make_shared<ProbeBackward>([](const Tensor& g) { return mul(g, 2.0); });
  sum(through(x, first)).backward();
  ASSERT_EQ(x.grad().raw_data(), first->returned);
  auto second = std::make_shared<ProbeBackward>([](const Tensor& g) { return mul(g, 5.0); });
  sum(through(x, second)).backward();
  EXPECT_EQ(x.grad().raw_data(), first->returned);  // added in place into the leaf's own tensor
  EXPECT_EQ(values(x.grad()), (std::vector<double>{7, 7, 7}));
}

TEST(AccumulateGrad, CastGradientReachesTheLeafInItsDtype) {
  // The mixed-precision path: an f32 leaf used in f64; CastBackward's fresh f32 gradient is the
  // leaf's gradient.
  const Tensor x = cpu_leaf({1, -2, 3});
  const Tensor y = cast(x, DType::F64);
  sum(mul(y, y)).backward();
  EXPECT_EQ(x.grad().dtype(), DType::F32);
  EXPECT_EQ(values(x.grad()), (std::vector<double>{2, -4, 6}));
}

}  // namespace
}  // namespace longnet
