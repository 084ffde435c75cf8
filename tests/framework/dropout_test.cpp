// Dropout: the mask comes from the Philox stream element by element, scales kept values, and
// replays exactly under activation checkpointing.
#include "framework/ops/dropout.h"

#include <gtest/gtest.h>

#include <thread>

#include "framework/cpu/random.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

TEST(Dropout, MaskIsThePhiloxStreamElementByElement) {
  const double p = 0.3;
  Generator gen(77);
  gen.reserve(10);  // start mid-stream: the offset must come from the generator
  const RngState before = gen.state();
  const Tensor x = ones({5, 7, 3}, DType::F64);
  const auto y = dropout(x, p, true, &gen).to_vector<double>();
  EXPECT_EQ(gen.state().offset, before.offset + (105 + 3) / 4);
  for (int64_t i = 0; i < 105; ++i) {
    const bool keep = static_cast<double>(cpu::philox_uniform(before.seed, before.offset, i)) >= p;
    EXPECT_EQ(y[static_cast<size_t>(i)], keep ? 1.0 / (1.0 - p) : 0.0) << "element " << i;
  }
}

TEST(Dropout, MaskFollowsRowMajorIndexOfStridedInput) {
  const double p = 0.5;
  Generator g1(5), g2(5);
  const Tensor base = arange(1, 25, 1, DType::F64).reshape({4, 6});
  const Tensor xt = base.transpose(0, 1);  // (6, 4), non-contiguous
  const auto y = dropout(xt, p, true, &g1).to_vector<double>();
  const auto xv = xt.contiguous().to_vector<double>();
  for (int64_t i = 0; i < 24; ++i) {
    const bool keep = static_cast<double>(cpu::philox_uniform(5, 0, i)) >= p;
    EXPECT_EQ(y[static_cast<size_t>(i)], keep ? xv[static_cast<size_t>(i)] * 2.0 : 0.0) << "element " << i;
  }
  EXPECT_TRUE(all_close(dropout(xt.contiguous(), p, true, &g2), from_vector<double>(y, {6, 4}), 0.0, 0.0));
}

TEST(Dropout, SameSeedSameMaskNextDrawDiffers) {
  Generator g1(123), g2(123);
  const Tensor x = ones({1000});
  const auto a = dropout(x, 0.5, true, &g1).to_vector<float>();
  EXPECT_EQ(a, dropout(x, 0.5, true, &g2).to_vector<float>());
  EXPECT_NE(a, dropout(x, 0.5, true, &g1).to_vector<float>());
  // The default stream is used when no generator is given.
  manual_seed(123);
  EXPECT_EQ(a, dropout(x, 0.5, true).to_vector<float>());
}

TEST(Dropout, EachThreadHasItsOwnDefaultStream) {
  // Ranks run as threads must not draw from (or reseed) each other's stream.
  manual_seed(7);
  const RngState before = default_generator().state();
  RngState other;
  std::thread t([&] {
    manual_seed(99);
    dropout(ones({64}), 0.5, true);
    other = default_generator().state();
  });
  t.join();
  EXPECT_EQ(other.seed, 99u);
  EXPECT_GT(other.offset, 0u);
  EXPECT_EQ(default_generator().state().seed, before.seed);
  EXPECT_EQ(default_generator().state().offset, before.offset);
}

TEST(Dropout, DropRateAndKeptValues) {
  for (double p : {0.1, 0.5, 0.9}) {
    Generator gen(2024);
    Generator gx(1);
    const Tensor x = randn({100000}, DType::F32, Device::cpu(), &gx);
    const auto xv = x.to_vector<float>(), yv = dropout(x, p, true, &gen).to_vector<float>();
    int64_t dropped = 0;
    for (size_t i = 0; i < xv.size(); ++i) {
      if (yv[i] == 0.0f && xv[i] != 0.0f) {
        ++dropped;
      } else {
        EXPECT_NEAR(yv[i], xv[i] / (1.0 - p), 1e-6 * std::abs(xv[i] / (1.0 - p))) << "element " << i;
      }
    }
    // Binomial standard deviation is at most 0.0016 here; allow about four of them.
    EXPECT_NEAR(static_cast<double>(dropped) / 1e5, p, 0.0065) << "p = " << p;
  }
}

TEST(Dropout, GradientIsMaskScaledAndGradchecks) {
  const double p = 0.4;
  const Tensor x = leaf({50, 20}, 8);
  Generator gen(31);
  const Tensor y = dropout(x, p, true, &gen);
  Generator gg(32);
  const Tensor g = randn({50, 20}, DType::F64, Device::cpu(), &gg);
  y.backward(g);
  const auto yv = y.to_vector<double>(), xv = x.to_vector<double>(), gv = g.to_vector<double>();
  const auto dx = x.grad().to_vector<double>();
  for (size_t i = 0; i < yv.size(); ++i) {
    const bool kept = static_cast<double>(cpu::philox_uniform(31, 0, static_cast<int64_t>(i))) >= p;
    EXPECT_NEAR(dx[i], kept ? gv[i] / (1.0 - p) : 0.0, 1e-12) << "element " << i;
  }
  // A fresh generator per call keeps the mask fixed across the finite differences.
  auto fn = [p](const std::vector<Tensor>& in) {
    Generator local(17);
    return dropout(in[0], p, true, &local);
  };
  EXPECT_TRUE(gradcheck(fn, {leaf({6, 5}, 1)}));
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return fn({in[0].transpose(0, 1)}); },
                        {leaf({5, 6}, 2)}));
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return fn({in[0].slice(1, 0, 8, 2)}); },
                        {leaf({4, 8}, 3)}));
}

TEST(Dropout, EvalModeAndZeroPAreIdentity) {
  const Tensor x = leaf({3, 4}, 5);
  Generator gen(1);
  EXPECT_EQ(dropout(x, 0.5, false, &gen).impl(), x.impl());
  EXPECT_EQ(dropout(x, 0.0, true, &gen).impl(), x.impl());
  EXPECT_EQ(gen.state().offset, 0u);  // nothing drawn
}

TEST(Dropout, Bf16InputKeepsDtype) {
  Generator g1(9), g2(9);
  const Tensor x = arange(1, 65, 1, DType::F32).reshape({8, 8});
  const Tensor y16 = dropout(x.to(DType::BF16), 0.25, true, &g1);
  EXPECT_EQ(y16.dtype(), DType::BF16);
  EXPECT_TRUE(all_close(y16.to(DType::F32), dropout(x, 0.25, true, &g2), 0.0, 1e-2));
}

TEST(Dropout, BadProbabilityThrows) {
  const Tensor x = zeros({2, 3});
  for (double p : {-0.1, 1.0, 1.5}) {
    const std::string m = testing::error_message([&] { dropout(x, p, true); });
    EXPECT_NE(m.find("[dropout] p must be in [0, 1)"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
  }
  EXPECT_THROW(dropout(x, 1.0, false), Error);  // checked in eval mode too
  const std::string m = testing::error_message([&] { dropout(zeros({2}, DType::I64), 0.5, true); });
  EXPECT_NE(m.find("[dropout]"), std::string::npos) << m;
}

TEST(Dropout, CheckpointReplaysTheMask) {
  const Tensor w = leaf({16, 8}, 41);
  auto block = [&](const std::vector<Tensor>& in) -> std::vector<Tensor> {
    return {tanh(mul(dropout(in[0], 0.5, true), w))};
  };
  Generator gg(7);
  const Tensor g = randn({16, 8}, DType::F64, Device::cpu(), &gg);
  auto grads = [&](bool use_checkpoint, uint64_t seed) {
    manual_seed(seed);
    const Tensor x = leaf({16, 8}, 40);
    w.set_grad(Tensor());
    const Tensor y = use_checkpoint ? checkpoint(block, {x})[0] : block({x})[0];
    // Draws after the block must not disturb the replay.
    rand({100}, DType::F32);
    y.backward(g);
    return std::make_pair(x.grad(), w.grad());
  };
  const auto plain = grads(false, 99);
  const auto ckpt = grads(true, 99);
  EXPECT_TRUE(all_close(ckpt.first, plain.first, 0.0, 0.0));
  EXPECT_TRUE(all_close(ckpt.second, plain.second, 0.0, 0.0));
  // A different stream gives different gradients, so the comparison above can fail.
  EXPECT_FALSE(all_close(grads(false, 100).first, plain.first, 1e-6, 0.0));
}

}  // namespace
}  // namespace longnet
