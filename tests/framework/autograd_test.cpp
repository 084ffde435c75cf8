// The autograd engine: accumulation, graph shapes (diamonds, paths of unequal length), retained
// and freed graphs, detach and no-grad mode, hooks, non-differentiable paths, checkpointing and
// the absence of leaks.
#include <cmath>

#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"
#include "tests/framework/reference.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::leaf;
using testing::near_all;

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::vector<double> map(const Tensor& t, const std::function<double(double)>& f) {
  std::vector<double> out;
  for (double v : t.to_vector<double>()) out.push_back(f(v));
  return out;
}

TEST(Autograd, GradientsAccumulateOverBackwardCalls) {
  Tensor x = leaf({2, 3}, 1);
  sum(mul(x, x)).backward();
  EXPECT_TRUE(near_all(x.grad().to_vector<double>(), map(x, [](double v) { return 2 * v; }), 1e-12, 1e-12));
  sum(mul(x, 3.0)).backward();
  EXPECT_TRUE(near_all(x.grad().to_vector<double>(), map(x, [](double v) { return 2 * v + 3; }), 1e-12, 1e-12));
  x.set_grad(Tensor());
  EXPECT_FALSE(x.grad().defined());
  sum(x).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), std::vector<double>(6, 1.0));
}

TEST(Autograd, LeafGradientIsOwnedByTheLeaf) {
  Tensor x = leaf({3}, 2);
  Tensor g = from_vector<double>({1, 2, 3}, {3});
  x.backward(g);
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{1, 2, 3}));
  EXPECT_NE(x.grad().storage(), g.storage());  // later in-place updates of the grad leave g alone
  Tensor s = scalar_tensor(2.0, DType::F64).requires_grad_(true);
  s.backward();
  EXPECT_EQ(s.grad().item(), 1.0);
}

TEST(Autograd, DiamondsSumTheGradientsOfEveryUse) {
  Tensor x = leaf({4}, 3);
  sum(mul(x, x)).backward();  // x used twice by one node
  EXPECT_TRUE(near_all(x.grad().to_vector<double>(), map(x, [](double v) { return 2 * v; }), 1e-12, 1e-12));
  // h feeds a product directly and through a longer chain: h * exp(exp(h)).
  Tensor y = leaf({4}, 4);
  Tensor h = tanh(y);
  sum(mul(h, exp(exp(h)))).backward();
  const auto want = map(y, [](double v) {
    const double t = std::tanh(v), e = std::exp(std::exp(t));
    return (e + t * e * std::exp(t)) * (1 - t * t);
  });
  EXPECT_TRUE(near_all(y.grad().to_vector<double>(), want, 1e-12, 1e-10));
}

TEST(Autograd, SeveralRootsAtOnce) {
  Tensor x = leaf({3}, 5);
  Tensor a = sum(mul(x, 2.0)), b = mul(x, x);
  autograd::run_backward({a, b}, {Tensor(), from_vector<double>({1, 1, 1}, {3})}, false);
  EXPECT_TRUE(near_all(x.grad().to_vector<double>(), map(x, [](double v) { return 2 + 2 * v; }), 1e-12, 1e-12));
}

TEST(Autograd, RetainGraphAllowsASecondBackward) {
  Tensor x = leaf({3}, 6);
  Tensor y = sum(exp(x));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward(Tensor(), /*retain_graph=*/false);
  EXPECT_TRUE(near_all(x.grad().to_vector<double>(), map(x, [](double v) { return 2 * std::exp(v); }), 1e-12, 1e-12));
  const std::string msg = testing::error_message([&] { y.backward(); });
  EXPECT_TRUE(contains(msg, "[backward]")) << msg;
  EXPECT_TRUE(contains(msg, "retain_graph")) << msg;
}

TEST(Autograd, SecondBackwardWithoutRetainGraphThrows) {
  Tensor x = leaf({3}, 7);
  Tensor y = sum(mul(x, x));
  y.backward();
  const std::string msg = testing::error_message([&] { y.backward(); });
  EXPECT_TRUE(contains(msg, "retain_graph")) << msg;
}

TEST(Autograd, DetachStopsGradients) {
  Tensor x = leaf({3}, 8);
  Tensor d = x.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_EQ(d.storage(), x.storage());
  sum(mul(d, x)).backward();  // only the x path carries a gradient
  EXPECT_EQ(x.grad().to_vector<double>(), x.to_vector<double>());
  EXPECT_FALSE(d.grad().defined());
  Tensor y = exp(x);
  EXPECT_EQ(y.detach().grad_fn(), nullptr);
  EXPECT_NE(y.grad_fn(), nullptr);
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = leaf({3}, 9);
  {
    NoGradGuard no_grad;
    EXPECT_FALSE(autograd::grad_enabled());
    Tensor y = sum(exp(mul(x, x)));
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
    EXPECT_THROW(y.backward(), Error);
    {
      EnableGradGuard enable;
      EXPECT_TRUE(exp(x).requires_grad());
    }
    EXPECT_FALSE(exp(x).requires_grad());
  }
  EXPECT_TRUE(autograd::grad_enabled());
  EXPECT_TRUE(exp(x).requires_grad());
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, RequiresGradOnlyOnFloatLeaves) {
  Tensor x = leaf({3}, 10);
  Tensor y = exp(x);
  const std::string m1 = testing::error_message([&] { y.requires_grad_(); });
  EXPECT_TRUE(contains(m1, "[requires_grad_]")) << m1;
  EXPECT_TRUE(contains(m1, "leaf")) << m1;
  const std::string m2 = testing::error_message([] { arange(0, 3, 1, DType::I64).requires_grad_(); });
  EXPECT_TRUE(contains(m2, "i64")) << m2;
  Tensor z = zeros({2});
  EXPECT_FALSE(z.requires_grad());
  z.requires_grad_();
  EXPECT_TRUE(z.requires_grad());
  z.requires_grad_(false);
  EXPECT_FALSE(z.requires_grad());
  EXPECT_FALSE(exp(z).requires_grad());
}

TEST(Autograd, BackwardErrors) {
  Tensor plain = from_vector<double>({1, 2}, {2});
  const std::string m1 = testing::error_message([&] { sum(plain).backward(); });
  EXPECT_TRUE(contains(m1, "[backward]")) << m1;
  EXPECT_TRUE(contains(m1, "does not require grad")) << m1;
  Tensor x = leaf({2, 3}, 11);
  Tensor y = exp(x);
  const std::string m2 = testing::error_message([&] { y.backward(); });
  EXPECT_TRUE(contains(m2, "[backward]")) << m2;
  EXPECT_TRUE(contains(m2, "(2, 3)")) << m2;
  const std::string m3 = testing::error_message([&] { y.backward(ones({3, 2}, DType::F64)); });
  EXPECT_TRUE(contains(m3, "(3, 2)")) << m3;
  y.backward(ones({2, 3}, DType::F64));
  EXPECT_TRUE(near_all(x.grad().to_vector<double>(), y.to_vector<double>(), 1e-12, 1e-12));
}

TEST(Autograd, GradReadyHooksFireOncePerAccumulation) {
  Tensor x = leaf({3}, 12);
  std::vector<std::vector<double>> seen;
  x.register_grad_ready_hook([&](const Tensor& g) { seen.push_back(g.to_vector<double>()); });
  // x is used three times in one graph: the hook still fires once, with the summed gradient.
  sum(add(mul(x, x), x)).backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_TRUE(near_all(seen[0], map(x, [](double v) { return 2 * v + 1; }), 1e-12, 1e-12));
  sum(x).backward();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(near_all(seen[1], map(x, [](double v) { return 2 * v + 2; }), 1e-12, 1e-12));
  EXPECT_THROW(exp(x).register_grad_ready_hook([](const Tensor&) {}), Error);
}

TEST(Autograd, NonDifferentiablePathsCarryNoGradient) {
  Tensor x = leaf({4}, 13);
  // Through a comparison used as a where condition, only the selected branch gets gradient.
  Tensor positive = compare(x, 0.0, CompareOp::Gt);
  EXPECT_FALSE(positive.requires_grad());
  sum(where(positive, mul(x, 2.0), zeros({}, DType::F64))).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), map(x, [](double v) { return v > 0 ? 2.0 : 0.0; }));
  // Integer results (argmax, casts to integers) do not require grad, and a float value rebuilt
  // from them contributes nothing.
  Tensor idx = argmax(x, 0);
  EXPECT_FALSE(idx.requires_grad());
  Tensor xi = x.to(DType::I64);
  EXPECT_FALSE(xi.requires_grad());
  x.set_grad(Tensor());
  sum(mul(xi.to(DType::F64), x)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), xi.to(DType::F64).to_vector<double>());
  // A root built only from non-differentiable ops has nothing to differentiate.
  Tensor root = sum(add(idx.to(DType::F64), xi.to(DType::F64)));
  const std::string msg = testing::error_message([&] { root.backward(); });
  EXPECT_TRUE(contains(msg, "does not require grad")) << msg;
}

TEST(Autograd, CastsBetweenFloatTypesAreDifferentiable) {
  Tensor x = leaf({3}, 14);
  Tensor y = sum(mul(x.to(DType::F32), 3.0).to(DType::F64));
  y.backward();
  EXPECT_EQ(x.grad().dtype(), DType::F64);
  EXPECT_EQ(x.grad().to_vector<double>(), std::vector<double>(3, 3.0));
}

// A block with a captured parameter: checkpointing must give the same gradients for its inputs
// and for the parameter as running it directly.
TEST(Autograd, CheckpointMatchesDirectGradients) {
  Tensor w = leaf({3, 4}, 15), b = leaf({4}, 16);
  const CheckpointFn block = [&](const std::vector<Tensor>& in) {
    Tensor h = tanh(add(mul(in[0], w), b));
    return std::vector<Tensor>{mul(h, in[1]), sum(exp(h))};
  };
  auto run = [&](bool ckpt) {
    Tensor x = leaf({3, 4}, 17), s = leaf({1, 4}, 18);
    w.set_grad(Tensor());
    b.set_grad(Tensor());
    const std::vector<Tensor> outs = ckpt ? checkpoint(block, {x, s}) : block({x, s});
    if (ckpt) {
      // Nothing inside the block was recorded: the outputs hang off one checkpoint node.
      EXPECT_EQ(outs[0].grad_fn(), outs[1].grad_fn());
      EXPECT_EQ(outs[0].grad_fn()->name(), "CheckpointBackward");
    }
    Generator g(5);
    Tensor weight = randn({3, 4}, DType::F64, Device::cpu(), &g);
    add(sum(mul(outs[0], weight)), mul(outs[1], 0.5)).backward();
    return std::vector<Tensor>{x.grad(), s.grad(), w.grad(), b.grad()};
  };
  const auto direct = run(false), ckpt = run(true);
  for (size_t i = 0; i < direct.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(ckpt[i].defined());
    EXPECT_TRUE(testing::all_close(ckpt[i], direct[i], 1e-12, 1e-12));
  }
}

TEST(Autograd, CheckpointReachesParametersWhenNoInputRequiresGrad) {
  Tensor w = leaf({3}, 19);
  Tensor x = from_vector<double>({1, 2, 3}, {3});
  const auto outs = checkpoint([&](const std::vector<Tensor>& in) { return std::vector<Tensor>{mul(in[0], w)}; }, {x});
  sum(outs[0]).backward();
  EXPECT_EQ(w.grad().to_vector<double>(), (std::vector<double>{1, 2, 3}));
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, CheckpointOutputsThatAliasInputsLeaveTheInputsAlone) {
  Tensor x = leaf({3}, 23);
  const auto outs = checkpoint(
      [](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0], mul(in[0], 2.0)}; }, {x});
  EXPECT_TRUE(x.is_leaf());
  EXPECT_FALSE(outs[0].is_leaf());
  EXPECT_EQ(outs[0].storage(), x.storage());
  sum(add(outs[0], outs[1])).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), std::vector<double>(3, 3.0));
  sum(x).backward();  // x itself still accumulates directly
  EXPECT_EQ(x.grad().to_vector<double>(), std::vector<double>(3, 4.0));
}

TEST(Autograd, BackwardFreesEverything) {
  const int64_t before = memory_stats(Device::cpu()).current_bytes;
  {
    Tensor x = leaf({64, 64}, 20);
    Tensor w = leaf({64}, 21);
    Tensor h = tanh(mul(x, w));
    Tensor y = logsumexp(add(max(h, 1, true), mul(h, h)), {1});
    sum(y).backward();
    EXPECT_GT(memory_stats(Device::cpu()).current_bytes, before);
  }
  EXPECT_EQ(memory_stats(Device::cpu()).current_bytes, before);
  {
    // Also when the graph is retained and simply dropped, and through a checkpoint.
    Tensor x = leaf({32, 32}, 22);
    Tensor y = sum(exp(x.transpose(0, 1).slice(1, 0, 32, 2)));
    y.backward(Tensor(), true);
    const auto outs = checkpoint([](const std::vector<Tensor>& in) { return std::vector<Tensor>{sigmoid(in[0])}; }, {x});
    sum(outs[0]).backward();
  }
  EXPECT_EQ(memory_stats(Device::cpu()).current_bytes, before);
}

}  // namespace
}  // namespace longnet
