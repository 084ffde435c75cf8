// cast_many: every output equal to cast's bit for bit, on the CPU and on the GPU (where the
// contiguous aligned tensors share launches): sizes with tails after the 16-byte packs, more
// tensors than one launch carries, empty tensors, misaligned and transposed views, several source
// dtypes at once, tensors already in the target dtype (passed through); its gradient against
// finite differences, one node for all, and outputs that receive no gradient.
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::gradcheck;
using testing::leaf;

// 201 tensors on `device`: f32 (half of them, more than one launch takes), bf16, f16 and f64 of
// sizes from 0 to past a few blocks, every 10th (from the 7th) a view starting one element into
// its storage, every 10th (from the 9th) a transposed (2, n) view, and an undefined one last.
std::vector<Tensor> make_inputs(Device device) {
  const std::vector<int64_t> sizes = {0, 1, 3, 17, 255, 4097, 3 * 4096 + 5};
  const std::vector<DType> dtypes = {DType::F32, DType::BF16, DType::F32, DType::F16, DType::F32, DType::F64};
  Generator g(5);
  std::vector<Tensor> in;
  for (int i = 0; i < 200; ++i) {
    const int64_t n = sizes[static_cast<size_t>(i) % sizes.size()];
    const DType dt = dtypes[static_cast<size_t>(i) % dtypes.size()];
    // Values with more mantissa bits than the narrow types keep: every cast rounds.
    const Tensor values = mul(randn({n + 1, 2}, DType::F64, Device::cpu(), &g), 3.0 + i % 50);
    if (i % 10 == 6) {
      in.push_back(values.reshape({2 * n + 2}).to(dt).to(device).narrow(0, 1, n));
    } else if (i % 10 == 8) {
      in.push_back(values.narrow(0, 0, n).to(dt).to(device).transpose(0, 1));
    } else {
      in.push_back(values.reshape({2 * n + 2}).narrow(0, 0, n).to(dt).to(device));
    }
  }
  in.emplace_back();
  return in;
}

// The values of `t` (any float dtype, any device) exactly, as doubles.
std::vector<double> exact(const Tensor& t) { return t.to(Device::cpu()).to(DType::F64).to_vector<double>(); }

// cast_many(in, dtype) against cast(in[i], dtype) for every i, for every float target.
void expect_casts_like_cast(const std::vector<Tensor>& in) {
  for (const DType dtype : {DType::BF16, DType::F16, DType::F32, DType::F64}) {
    const std::vector<Tensor> out = cast_many(in, dtype);
    ASSERT_EQ(out.size(), in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      if (!in[i].defined()) {
        EXPECT_FALSE(out[i].defined()) << i;
        continue;
      }
      if (in[i].dtype() == dtype) {
        EXPECT_EQ(out[i].impl(), in[i].impl()) << "tensor " << i << " already in " << dtype_name(dtype);
        continue;
      }
      const Tensor want = cast(in[i], dtype);
      EXPECT_EQ(out[i].dtype(), dtype) << i;
      EXPECT_EQ(out[i].device(), in[i].device()) << i;
      ASSERT_EQ(out[i].shape(), in[i].shape()) << i;
      EXPECT_EQ(exact(out[i]), exact(want)) << "tensor " << i << ": " << dtype_name(in[i].dtype()) << " -> "
                                            << dtype_name(dtype) << ", " << shape_str(in[i].shape());
    }
  }
}

TEST(CastMany, EqualsCastBitForBitOnTheCpu) { expect_casts_like_cast(make_inputs(Device::cpu())); }

TEST(CastMany, EqualsCastBitForBitOnTheGpuInSharedLaunches) {
  LN_REQUIRE_GPU();
  const std::vector<Tensor> in = make_inputs(Device::cuda(0));
  expect_casts_like_cast(in);
  // And the GPU's conversions round as the CPU's do.
  const std::vector<Tensor> out = cast_many(in, DType::BF16);
  for (size_t i = 0; i + 1 < in.size(); ++i) {
    EXPECT_EQ(exact(out[i]), exact(cast(in[i].to(Device::cpu()), DType::BF16))) << i;
  }
}

// sum over i of cast_many(xs, f32)[i]^2 converted back to f64 (by cast_many again), weighted:
// central differences of a quadratic are exact, so the f32 rounding alone limits the tolerance.
TEST(CastMany, GradientMatchesFiniteDifferences) {
  const auto fn = [](const std::vector<Tensor>& xs) {
    const std::vector<Tensor> narrow = cast_many(xs, DType::F32);
    std::vector<Tensor> squares;
    for (const Tensor& t : narrow) squares.push_back(mul(t, t).reshape({-1}));
    const std::vector<Tensor> wide = cast_many(squares, DType::F64);
    return cat({wide[0], mul(wide[1], 2.0), wide[2]}, 0);
  };
  EXPECT_TRUE(gradcheck(fn, {leaf({3, 5}, 1), leaf({17}, 2), leaf({1}, 3)}, {.eps = 1e-2, .atol = 1e-4, .rtol = 1e-3}));
}

// One node for every converted tensor that needs a gradient; input i's gradient is output i's
// cast back to input i's dtype; an output without a gradient gives its input none; tensors that
// need no conversion or no gradient get no node.
void expect_one_node_backward(Device device) {
  Generator g(9);
  const Tensor a = randn({4, 3}, DType::F32, device, &g).requires_grad_(true);
  const Tensor b = randn({5}, DType::F64, device, &g).requires_grad_(true);
  const Tensor c = randn({7}, DType::F32, device, &g).requires_grad_(true);
  const Tensor d = randn({2}, DType::BF16, device, &g).requires_grad_(true);
  const Tensor constant = randn({3}, DType::F32, device, &g);
  const std::vector<Tensor> out = cast_many(std::vector<Tensor>{a, b, c, d, constant}, DType::BF16);
  EXPECT_EQ(out[3].impl(), d.impl());
  EXPECT_EQ(out[4].grad_fn(), nullptr);
  ASSERT_NE(out[0].grad_fn(), nullptr);
  EXPECT_EQ(out[0].grad_fn()->name(), "CastManyBackward");
  EXPECT_EQ(out[1].grad_fn(), out[0].grad_fn());
  EXPECT_EQ(out[2].grad_fn(), out[0].grad_fn());
  const Tensor ga = randn({4, 3}, DType::BF16, device, &g), gb = randn({5}, DType::BF16, device, &g);
  // c's output takes no part in the loss.
  add(sum(mul(out[0], ga)).to(DType::F32), sum(mul(out[1], gb)).to(DType::F32)).backward();
  ASSERT_TRUE(a.grad().defined() && b.grad().defined());
  EXPECT_EQ(a.grad().dtype(), DType::F32);
  EXPECT_EQ(b.grad().dtype(), DType::F64);
  EXPECT_EQ(exact(a.grad()), exact(cast(ga, DType::F32)));
  EXPECT_EQ(exact(b.grad()), exact(cast(gb, DType::F64)));
  EXPECT_FALSE(c.grad().defined());
  EXPECT_FALSE(d.grad().defined());
}

TEST(CastMany, OneNodeCastsDefinedGradientsBackOnTheCpu) { expect_one_node_backward(Device::cpu()); }

TEST(CastMany, OneNodeCastsDefinedGradientsBackOnTheGpu) {
  LN_REQUIRE_GPU();
  expect_one_node_backward(Device::cuda(0));
}

TEST(CastMany, RecordsNothingWithoutGradMode) {
  const Tensor a = randn({3}).requires_grad_(true);
  NoGradGuard no_grad;
  const std::vector<Tensor> out = cast_many(std::vector<Tensor>{a}, DType::F64);
  EXPECT_EQ(out[0].grad_fn(), nullptr);
  EXPECT_FALSE(out[0].requires_grad());
}

}  // namespace
}  // namespace longnet
