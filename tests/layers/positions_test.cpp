// Rotary positions: XPOS and RoPE against a per-element reference written from the papers'
// formulas, the relative-position property, chunks at a position offset, and gradients.
#include <cmath>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"
#include "layers/positions.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::leaf;

// Per element: pair i = (x_2i, x_2i+1) at position n rotated by n * base^(-2i/D) and, for XPOS,
// scaled by ((2i + 0.4 D) / (1.4 D))^(+-(n - center) / scale_base) (+ for queries, - for keys),
// the centre of block floor(n / P) (its middle) when center_period P > 0.
std::vector<double> reference(const Tensor& x, const RotaryConfig& c, int64_t offset, bool is_key) {
  const auto v = x.to_vector<double>();
  const int64_t b = x.size(0), n = x.size(1), h = x.size(2), d = x.size(3);
  std::vector<double> out(v.size());
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t p = 0; p < n; ++p) {
      const double pos = static_cast<double>(offset + p);
      for (int64_t hi = 0; hi < h; ++hi) {
        for (int64_t i = 0; i < d / 2; ++i) {
          const double theta = std::pow(c.base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
          double s = 1.0;
          if (c.kind == "xpos") {
            const double zeta = (2.0 * static_cast<double>(i) + 0.4 * static_cast<double>(d)) / (1.4 * static_cast<double>(d));
            const int64_t at_pos = offset + p, period = c.center_period;
            const double center =
                static_cast<double>(period > 0 ? (at_pos / period) * period + period / 2 : c.center);
            s = std::pow(zeta, (is_key ? -1.0 : 1.0) * (pos - center) / c.scale_base);
          }
          const size_t at = static_cast<size_t>(((bi * n + p) * h + hi) * d + 2 * i);
          const double x0 = v[at], x1 = v[at + 1];
          out[at] = (x0 * std::cos(pos * theta) - x1 * std::sin(pos * theta)) * s;
          out[at + 1] = (x1 * std::cos(pos * theta) + x0 * std::sin(pos * theta)) * s;
        }
      }
    }
  }
  return out;
}

RotaryConfig config(const std::string& kind, int64_t head_dim, int64_t center = 0) {
  RotaryConfig c;
  c.kind = kind;
  c.head_dim = head_dim;
  c.scale_base = 16.0;  // a strong decay, so that a wrong exponent shows on short sequences
  c.center = center;
  return c;
}

class Rotary : public ::testing::TestWithParam<std::string> {};

TEST_P(Rotary, MatchesPerElementReference) {
  for (int64_t center : {0, 7}) {
    for (int64_t period : {0, 6}) {
      RotaryConfig c = config(GetParam(), 8, center);
      c.center_period = period;
      const RotaryEmbedding rot(c);
      const Tensor x = leaf({2, 11, 3, 8}, 1);
      for (int64_t offset : {0, 5}) {
        for (bool is_key : {false, true}) {
          EXPECT_TRUE(all_close(rot.apply(x, offset, is_key),
                                from_vector(reference(x, c, offset, is_key), x.shape()), 1e-12, 1e-12))
              << "offset " << offset << " key " << is_key << " center " << center << " period " << period;
        }
      }
    }
  }
}

TEST_P(Rotary, ScoresDependOnlyOnRelativePosition) {
  const RotaryEmbedding rot(config(GetParam(), 16, 3));
  const Tensor q = leaf({1, 1, 1, 16}, 2), k = leaf({1, 1, 1, 16}, 3);
  // q placed at m, k at n (through the offset), for several shifts of both.
  const auto score = [&](int64_t m, int64_t n) {
    return sum(mul(rot.apply(q, m, false), rot.apply(k, n, true))).item();
  };
  for (int64_t delta : {0, 1, 4, 9}) {
    const double base = score(delta, 0);
    for (int64_t shift : {1, 6, 40}) EXPECT_NEAR(score(delta + shift, shift), base, 1e-10 * (1.0 + std::abs(base)));
  }
  // And it does depend on the distance.
  EXPECT_GT(std::abs(score(1, 0) - score(5, 0)), 1e-3);
}

TEST_P(Rotary, ChunkAtOffsetEqualsSliceOfWholeSequence) {
  const RotaryEmbedding rot(config(GetParam(), 8, 10));
  const Tensor x = leaf({2, 20, 2, 8}, 4);
  for (bool is_key : {false, true}) {
    const Tensor whole = rot.apply(x, 0, is_key);
    for (int64_t p0 : {0, 7, 13}) {
      const Tensor chunk = rot.apply(x.narrow(1, p0, 20 - p0).contiguous(), p0, is_key);
      EXPECT_TRUE(all_close(chunk, whole.narrow(1, p0, 20 - p0), 1e-13, 1e-12)) << p0;
    }
  }
}

TEST_P(Rotary, RunsRotateRowsAsTheirPlacesInTheWholeSequence) {
  // A zigzag rank's rows: positions 2..4 then 12..15 of a 20-row sequence.
  const RotaryEmbedding rot(config(GetParam(), 8, 10));
  const Tensor x = leaf({2, 20, 2, 8}, 9);
  const Tensor mine = cat({x.narrow(1, 2, 3), x.narrow(1, 12, 4)}, 1).contiguous();
  for (bool is_key : {false, true}) {
    const Tensor whole = rot.apply(x, 0, is_key);
    const Tensor want = cat({whole.narrow(1, 2, 3), whole.narrow(1, 12, 4)}, 1);
    EXPECT_TRUE(all_close(rot.apply(mine, Positions::runs({{2, 3}, {12, 4}}), is_key), want, 1e-13, 1e-12));
  }
  EXPECT_NE(testing::error_message([&] { rot.apply(mine, Positions::runs({{2, 3}, {12, 3}}), false); })
                .find("cover 6 rows but the tensor has 7"),
            std::string::npos);
}

TEST_P(Rotary, GradientsMatchFiniteDifferences) {
  const RotaryEmbedding rot(config(GetParam(), 6, 2));
  const Tensor x = leaf({2, 5, 2, 6}, 5);
  EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return rot.apply(in[0], 3, false); }, {x}));
  EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return rot.apply(in[0], 1, true); }, {x}));
}

TEST_P(Rotary, SixteenBitInputsComputeInF32) {
  const RotaryConfig c = config(GetParam(), 8);
  const RotaryEmbedding rot(c);
  const Tensor x = randn({1, 9, 2, 8}, DType::BF16);
  const Tensor y = rot.apply(x, 100, false);
  EXPECT_EQ(y.dtype(), DType::BF16);
  // One bf16 rounding of the exact result.
  EXPECT_TRUE(all_close(y.to(DType::F64), from_vector(reference(x, c, 100, false), x.shape()), 1e-6, 1e-2));
}

INSTANTIATE_TEST_SUITE_P(Kinds, Rotary, ::testing::Values("xpos", "rope"));

TEST(Rotary, XposDecaysWithDistanceAndRopeDoesNot) {
  // With q = k = one pair's unit vector, the rotation is the same at equal positions and the score
  // is the product of the scales: zeta^((m - n) / scale_base) for XPOS, 1 for RoPE.
  for (const std::string kind : {"xpos", "rope"}) {
    const RotaryConfig c = config(kind, 4);
    const RotaryEmbedding rot(c);
    const Tensor e = from_vector(std::vector<double>{1, 0, 0, 0}, {1, 1, 1, 4});
    const double near = sum(mul(rot.apply(e, 8, false), rot.apply(e, 8, true))).item();
    EXPECT_NEAR(near, 1.0, 1e-12);
    const double far_q = sum(mul(rot.apply(e, 40, false), rot.apply(e, 40, true))).item();
    EXPECT_NEAR(far_q, 1.0, 1e-12) << "scores at equal positions do not depend on the position";
    const double zeta = 0.4 / 1.4;  // pair 0
    const Tensor q = rot.apply(e, 24, false), k = rot.apply(e, 8, true);
    const double norm_q = std::sqrt(sum(mul(q, q)).item()), norm_k = std::sqrt(sum(mul(k, k)).item());
    EXPECT_NEAR(norm_q * norm_k, kind == "xpos" ? std::pow(zeta, 16.0 / c.scale_base) : 1.0, 1e-12);
  }
}

TEST(Rotary, BlockCentresCancelWithinABlockAndStayFiniteFarFromZero) {
  // The paper's setting (D 64, scale_base 512): one centre at 16K overflows f32 a million
  // positions on, a centre per 32K block does not.
  RotaryConfig one;
  one.kind = "xpos";
  one.head_dim = 64;
  one.center = 16384;
  RotaryConfig blocks = one;
  blocks.center_period = 32768;
  const RotaryEmbedding rot_one(one), rot_blocks(blocks);
  const Tensor x = cast(leaf({1, 4, 2, 64}, 6), DType::F32);
  const auto finite = [](const Tensor& t) {
    for (const double v : t.to_vector<double>()) {
      if (!std::isfinite(v)) return false;
    }
    return true;
  };
  EXPECT_FALSE(finite(rot_one.apply(x, 1 << 20, true))) << "the failure the block centres avoid";
  EXPECT_TRUE(finite(rot_blocks.apply(x, 1 << 20, true)));
  EXPECT_TRUE(finite(rot_blocks.apply(x, 1 << 20, false)));
  // Within a block the scores are those of one centre (here in f64, where one centre is finite):
  // q at m, k at n in the same block of the period, several blocks.
  RotaryConfig one64 = one, blocks64 = blocks;
  one64.scale_base = blocks64.scale_base = 16.0;
  one64.center_period = 0;
  one64.center = 0;
  blocks64.center_period = 32;
  const RotaryEmbedding a(one64), b(blocks64);
  const Tensor q = leaf({1, 1, 1, 64}, 7), k = leaf({1, 1, 1, 64}, 8);
  const auto score = [&](const RotaryEmbedding& r, int64_t m, int64_t n) {
    return sum(mul(r.apply(q, m, false), r.apply(k, n, true))).item();
  };
  for (const auto& [m, n] : std::vector<std::pair<int64_t, int64_t>>{{5, 0}, {31, 2}, {40, 33}, {95, 64}}) {
    const double want = score(a, m, n);
    EXPECT_NEAR(score(b, m, n), want, 1e-9 * (1.0 + std::abs(want))) << m << ", " << n;
  }
  // Across blocks they are not (no block-local core pairs such positions).
  EXPECT_GT(std::abs(score(b, 33, 30) - score(a, 33, 30)), 1e-6);
}

TEST(Rotary, BackwardKeepsOnlyTheCachedTables) {
  // The fused rotation saves no activation: its node holds the (N, D/2) f32 tables, which the
  // next call at the same positions reuses.
  const RotaryEmbedding rot(config("xpos", 16));
  const Tensor x = cast(leaf({2, 10, 3, 16}, 11), DType::BF16).detach().requires_grad_();
  const Tensor y = rot.apply(x, 4, true);
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "RotatePairsBackward");
  const std::vector<Tensor> saved = y.grad_fn()->saved_tensors();
  ASSERT_EQ(saved.size(), 2u);
  const std::vector<Tensor> again = rot.apply(x, 4, true).grad_fn()->saved_tensors();
  for (size_t i = 0; i < saved.size(); ++i) {
    EXPECT_EQ(saved[i].shape(), (Shape{10, 8}));
    EXPECT_EQ(saved[i].dtype(), DType::F32);
    EXPECT_EQ(again[i].storage(), saved[i].storage());
  }
}

TEST(Rotary, RejectsBadInputs) {
  EXPECT_NE(testing::error_message([] { RotaryEmbedding(config("alibi", 8)); }).find("unknown kind 'alibi'"),
            std::string::npos);
  EXPECT_NE(testing::error_message([] { RotaryEmbedding(config("rope", 7)); }).find("even"), std::string::npos);
  const RotaryEmbedding rot(config("rope", 8));
  const std::string msg = testing::error_message([&] { rot.apply(zeros({1, 4, 2, 6}), 0, false); });
  EXPECT_NE(msg.find("(1, 4, 2, 6)"), std::string::npos) << msg;
  EXPECT_NE(testing::error_message([&] { rot.apply(zeros({1, 4, 2, 8}), -1, false); }).find("non-negative"),
            std::string::npos);
}

}  // namespace
}  // namespace longnet
