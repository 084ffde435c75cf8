// Gradient sinks: when an input's gradient has begun to gather and nothing but the engine holds
// it, the engine offers it to the next node that contributes to it; linear adds its dx into it in
// the product (beta = 1) instead of returning a tensor the engine would add separately.
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

// Calls of the top-level "add" scope, the engine's own additions of gradient contributions.
int64_t engine_adds(const std::vector<ProfileEntry>& entries) {
  for (const ProfileEntry& e : entries) {
    if (e.name == "add") return e.calls;
  }
  return 0;
}

// y = x W_i^T + b_i for three projections of one x (as q, k and v are), summed with weights so
// that each projection's gradient differs.
Tensor three_projections(const Tensor& x, const std::vector<Tensor>& w, const std::vector<Tensor>& b) {
  Tensor total;
  for (size_t i = 0; i < w.size(); ++i) {
    const Tensor y = mul(linear(x, w[i], b[i]), static_cast<double>(i + 1));
    total = total.defined() ? add(total, y) : y;
  }
  return sum(total);
}

TEST(GradSink, SharedInputOfThreeLinearsTakesTheirGradientsWithoutEngineAdds) {
  const Tensor h = testing::leaf({4, 5, 6}, 1);
  std::vector<Tensor> w, b;
  for (uint64_t i = 0; i < 3; ++i) {
    w.push_back(testing::leaf({7, 6}, 10 + i));
    b.push_back(testing::leaf({7}, 20 + i));
  }
  // x has a grad_fn, so its gradient gathers in the engine's buffers, not in a leaf.
  const Tensor x = mul(h, 0.5);
  const Tensor loss = three_projections(x, w, b);
  Profiler profiler(Device::cpu());
  loss.backward();
  EXPECT_EQ(engine_adds(profiler.finish()), 0);

  // dL/dh = 0.5 * sum_i (i + 1) * ones @ W_i, formed here without the engine.
  const Tensor ones_out = ones({4, 5, 7}, DType::F64, Device::cpu());
  Tensor expect;
  for (size_t i = 0; i < 3; ++i) {
    const Tensor part = mul(matmul(reshape(ones_out, {20, 7}), w[i].detach()), 0.5 * static_cast<double>(i + 1));
    expect = expect.defined() ? add(expect, part) : part;
  }
  EXPECT_TRUE(testing::all_close(reshape(h.grad(), {20, 6}), expect, 1e-12, 1e-12));
}

TEST(GradSink, GradientsEqualTheEngineAddingThemSeparately) {
  // The same graph through ops that take no sink (mul by 1 after each product) gives the sum the
  // engine forms itself; with sinks the products add into it: equal in f64 to rounding.
  const Tensor h = testing::leaf({3, 8}, 2);
  std::vector<Tensor> w, b;
  for (uint64_t i = 0; i < 3; ++i) {
    w.push_back(testing::leaf({5, 8}, 30 + i));
    b.push_back(testing::leaf({5}, 40 + i));
  }
  three_projections(mul(h, 1.5), w, b).backward();
  const Tensor with_sinks = h.grad().clone();
  h.set_grad(Tensor());

  const Tensor x = mul(h, 1.5);
  Tensor total;
  for (size_t i = 0; i < 3; ++i) {
    // The copy keeps x's gradient out of the products' reach: each returns a fresh dx.
    const Tensor y = mul(linear(mul(x, 1.0), w[i], b[i]), static_cast<double>(i + 1));
    total = total.defined() ? add(total, y) : y;
  }
  sum(total).backward();
  EXPECT_TRUE(testing::all_close(with_sinks, h.grad(), 1e-13, 1e-13));
}

TEST(GradSink, ALeafsGradientMatchesFiniteDifferences) {
  // x itself a leaf: the sink is the leaf accumulator's buffer.
  std::vector<Tensor> w, b;
  for (uint64_t i = 0; i < 3; ++i) {
    w.push_back(testing::leaf({4, 3}, 50 + i));
    b.push_back(testing::leaf({4}, 60 + i));
  }
  const testing::TensorFn fn = [&](const std::vector<Tensor>& a) { return three_projections(a[0], w, b); };
  EXPECT_TRUE(testing::gradcheck(fn, {testing::leaf({2, 3}, 3)}));
}

// A pre-norm residual block, y = x + W LN(x) + b: the skip's gradient reaches x first, and the
// norm's backward adds its dx into it as it writes (the norm's own incoming gradient is the
// product's fresh dx, so nothing else holds the skip's by then).
Tensor residual_block(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& g, const Tensor& beta) {
  return add(x, linear(layer_norm(x, g, beta), w, b));
}

TEST(GradSink, NormBackwardAddsIntoTheResidualGradient) {
  const Tensor w = testing::leaf({6, 6}, 70), b = testing::leaf({6}, 71);
  const Tensor g = testing::leaf({6}, 72), beta = testing::leaf({6}, 73);
  const Tensor coeff = testing::leaf({3, 6}, 74).detach();
  const testing::TensorFn fn = [&](const std::vector<Tensor>& a) {
    return sum(mul(residual_block(mul(a[0], 2.0), w, b, g, beta), coeff));
  };
  const Tensor h = testing::leaf({3, 6}, 5);
  const Tensor loss = fn({h});
  Profiler profiler(Device::cpu());
  loss.backward();
  EXPECT_EQ(engine_adds(profiler.finish()), 0);
  EXPECT_TRUE(testing::gradcheck(fn, {testing::leaf({3, 6}, 5)}));
}

TEST(GradSink, NormWhoseIncomingGradientIsTheSkipsOwnIsNotWrittenInPlace) {
  // y = x + LN(x): add hands one tensor to both the skip and the norm, which reads it as dy, so
  // the engine must not offer it to the norm as the place to write dx.
  const Tensor g = testing::leaf({5}, 80), beta = testing::leaf({5}, 81);
  const Tensor coeff = testing::leaf({4, 5}, 82).detach();
  const testing::TensorFn fn = [&](const std::vector<Tensor>& a) {
    const Tensor x = mul(a[0], 1.5);
    return sum(mul(add(x, layer_norm(x, g, beta)), coeff));
  };
  EXPECT_TRUE(testing::gradcheck(fn, {testing::leaf({4, 5}, 6)}));
}

// A differentiable identity whose backward returns a tensor the test keeps a handle on.
class KeepBackward final : public autograd::Node {
 public:
  std::string name() const override { return "KeepBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    kept = mul(grads[0], 3.0);
    return {kept};
  }
  Tensor kept;
};

TEST(GradSink, AGradientSomeoneElseHoldsIsNeverWrittenInPlace) {
  const Tensor h = testing::leaf({2, 4}, 4);
  const Tensor x = mul(h, 2.0);
  auto keep = std::make_shared<KeepBackward>();
  const Tensor through = x.detach();
  autograd::record(keep, {x}, {through});
  const Tensor w = testing::leaf({3, 4}, 5), b = testing::leaf({3}, 6);
  // x gets two contributions: KeepBackward's (which the node still holds) and linear's.
  add(sum(through), sum(linear(x, w, b))).backward();
  const std::vector<double> kept = keep->kept.to_vector<double>();
  for (double v : kept) EXPECT_EQ(v, 3.0);  // still its own value, whatever order the nodes ran in
  // dL/dh = 2 * (3 + column sums of W).
  const std::vector<double> wv = w.detach().to_vector<double>(), got = h.grad().to_vector<double>();
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t c = 0; c < 4; ++c) {
      const double want = 2.0 * (3.0 + wv[static_cast<size_t>(c)] + wv[static_cast<size_t>(4 + c)] +
                                 wv[static_cast<size_t>(8 + c)]);
      EXPECT_NEAR(got[static_cast<size_t>(r * 4 + c)], want, 1e-12);
    }
  }
}

}  // namespace
}  // namespace longnet
