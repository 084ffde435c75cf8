// linear_cross_entropy: the chunked head + loss against the composite cross_entropy(linear(x, w), t)
// (values and gradients, every dtype, vocabularies that are and are not multiples of 8, which the
// op pads, upstream gradients other than 1), the gradients formed in the forward (only under grad
// mode; what the node keeps), a gradient check, the memory it never takes, errors, and the GPU
// against the CPU.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/core/storage.h"
#include "framework/ops/loss.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

using LossFn = std::function<Tensor(const Tensor& x, const Tensor& w)>;

// A loss and the gradients of x and w it gives.
struct LossAndGrads {
  Tensor loss, dx, dw;
};

// Runs `f` on fresh leaves holding x's and w's values and back-propagates from its loss.
LossAndGrads run(const LossFn& f, const Tensor& x, const Tensor& w) {
  Tensor xl = x.detach().clone().requires_grad_(true), wl = w.detach().clone().requires_grad_(true);
  LossAndGrads r;
  r.loss = f(xl, wl);
  r.loss.backward();
  r.dx = xl.grad();
  r.dw = wl.grad();
  return r;
}

LossAndGrads composite(const Tensor& x, const Tensor& w, const Tensor& t, int64_t ignore = -100) {
  return run([&](const Tensor& a, const Tensor& b) { return cross_entropy(linear(a, b), t, ignore); }, x, w);
}

LossAndGrads chunked(const Tensor& x, const Tensor& w, const Tensor& t, int64_t chunk, int64_t ignore = -100) {
  return run([&](const Tensor& a, const Tensor& b) { return linear_cross_entropy(a, b, t, ignore, chunk); }, x, w);
}

// Targets below `classes` with every `ignore_every`-th one set to `ignore` (0: none ignored).
Tensor targets_of(const Shape& shape, int64_t classes, int64_t ignore_every, int64_t ignore, uint64_t seed,
                  Device device = Device::cpu()) {
  Generator g(seed);
  std::vector<int64_t> t = randint(0, classes, shape, DType::I64, Device::cpu(), &g).to_vector<int64_t>();
  for (size_t i = 0; ignore_every > 0 && i < t.size(); i += static_cast<size_t>(ignore_every)) t[i] = ignore;
  return from_vector(t, shape, device);
}

// max |t| over the elements, for tolerances relative to a tensor's scale.
double max_abs(const Tensor& t) {
  double m = 0.0;
  for (double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

struct F64Case {
  Shape x;
  int64_t classes, chunk, ignore_every;
};

TEST(LinearCrossEntropy, F64EqualsTheCompositeForAnyChunking) {
  // Chunks that do not divide the rows, one row, all rows at once (0: the default), 2-D and 3-D x.
  for (const F64Case& c : {F64Case{{7, 5}, 11, 3, 3}, F64Case{{7, 5}, 11, 1, 0}, F64Case{{2, 5, 4}, 9, 4, 4},
                           F64Case{{3, 4, 6}, 13, 5, 2}, F64Case{{3, 4, 6}, 13, 0, 5}}) {
    SCOPED_TRACE(shape_str(c.x) + " classes " + std::to_string(c.classes) + " chunk " + std::to_string(c.chunk));
    Generator g(41);
    const Tensor x = randn(c.x, DType::F64, Device::cpu(), &g);
    const Tensor w = mul(randn({c.classes, c.x.back()}, DType::F64, Device::cpu(), &g), 0.7);
    const Tensor t = targets_of(Shape(c.x.begin(), c.x.end() - 1), c.classes, c.ignore_every, -100, 42);
    const LossAndGrads want = composite(x, w, t), got = chunked(x, w, t, c.chunk);
    EXPECT_EQ(got.loss.dtype(), DType::F64);
    EXPECT_EQ(got.loss.shape(), Shape{});
    EXPECT_NEAR(got.loss.item(), want.loss.item(), 1e-12);
    EXPECT_TRUE(all_close(got.dx, want.dx, 1e-12, 0.0));
    EXPECT_TRUE(all_close(got.dw, want.dw, 1e-12, 0.0));
  }
}

// Vocabularies the op pads to a multiple of 8 (97 to 104, 1001 to 1008; 1006 to 1008), and one it
// does not (1000), each with chunks that do and do not divide the rows, one row, and the default.
TEST(LinearCrossEntropy, OddVocabularyF64EqualsTheComposite) {
  for (const int64_t classes : {int64_t{97}, int64_t{1001}, int64_t{1006}, int64_t{1000}}) {
    Generator g(60);
    const Tensor x = randn({3, 11, 12}, DType::F64, Device::cpu(), &g);
    const Tensor w = mul(randn({classes, 12}, DType::F64, Device::cpu(), &g), 0.5);
    const Tensor t = targets_of({3, 11}, classes, 4, -100, 61);
    const LossAndGrads want = composite(x, w, t);
    for (const int64_t chunk : {int64_t{1}, int64_t{8}, int64_t{11}, int64_t{0}}) {
      SCOPED_TRACE("classes " + std::to_string(classes) + " chunk " + std::to_string(chunk));
      const LossAndGrads got = chunked(x, w, t, chunk);
      EXPECT_NEAR(got.loss.item(), want.loss.item(), 1e-12);
      EXPECT_EQ(got.dw.shape(), w.shape());
      EXPECT_TRUE(all_close(got.dx, want.dx, 1e-12, 0.0));
      EXPECT_TRUE(all_close(got.dw, want.dw, 1e-12, 0.0));
    }
  }
}

TEST(LinearCrossEntropy, I32TargetsCustomIgnoreIndexAndOneSidedGradients) {
  Generator g(43);
  const Tensor x = randn({2, 3, 4}, DType::F64, Device::cpu(), &g);
  const Tensor w = randn({6, 4}, DType::F64, Device::cpu(), &g);
  const Tensor t = from_vector<int32_t>({0, 5, 2, 3, 2, 1}, {2, 3});
  const LossAndGrads want = composite(x, w, t, 2);
  EXPECT_NEAR(chunked(x, w, t, 4, 2).loss.item(), want.loss.item(), 1e-12);
  // Only x needs a gradient, then only w: the other is not computed.
  const Tensor xl = x.clone().requires_grad_(true);
  linear_cross_entropy(xl, w, t, 2, 4).backward();
  EXPECT_TRUE(all_close(xl.grad(), want.dx, 1e-12, 0.0));
  const Tensor wl = w.clone().requires_grad_(true);
  linear_cross_entropy(x, wl, t, 2, 4).backward();
  EXPECT_TRUE(all_close(wl.grad(), want.dw, 1e-12, 0.0));
}

TEST(LinearCrossEntropy, GradientCheck) {
  const Tensor t = from_vector<int64_t>({1, -100, 4, 0, 2, 3}, {2, 3});
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) { return linear_cross_entropy(in[0], in[1], t, -100, 2); },
      {leaf({2, 3, 4}, 44), leaf({5, 4}, 45)}));
  // A transposed weight and a sliced x: views the chunks read in place.
  const Tensor t2 = from_vector<int64_t>({2, 0, 1}, {3});
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) {
        return linear_cross_entropy(in[0].slice(1, 0, 6, 2), in[1].transpose(0, 1), t2, -100, 2);
      },
      {leaf({3, 6}, 46), leaf({3, 3}, 47)}));
}

TEST(LinearCrossEntropy, AllIgnoredGivesZeroLossAndZeroGradients) {
  const LossAndGrads r = chunked(leaf({4, 3}, 48), leaf({5, 3}, 49), full({4}, -100, DType::I64), 3);
  EXPECT_EQ(r.loss.item(), 0.0);
  for (double v : r.dx.to_vector<double>()) EXPECT_EQ(v, 0.0);
  for (double v : r.dw.to_vector<double>()) EXPECT_EQ(v, 0.0);
}

// The loss times `scale` and the gradients it gives: scale != 1 makes the upstream gradient of the
// op's loss differ from 1.
LossFn scaled(const LossFn& f, double scale) {
  return [=](const Tensor& a, const Tensor& b) { return mul(f(a, b), scale); };
}

// The gradients are formed in the forward: for chunks of 1 row, of rows that do not divide the
// rows, all rows at once and the default; ignored rows; an upstream gradient of 1 and of 0.37.
TEST(LinearCrossEntropy, GradientsFormedInTheForwardEqualTheCompositeForAnyUpstreamGradient) {
  Generator g(70);
  const Tensor x = randn({3, 7, 6}, DType::F64, Device::cpu(), &g);
  const Tensor w = mul(randn({13, 6}, DType::F64, Device::cpu(), &g), 0.6);
  const Tensor t = targets_of({3, 7}, 13, 4, -100, 71);
  for (const double upstream : {1.0, 0.37}) {
    const LossAndGrads want = run(
        scaled([&](const Tensor& a, const Tensor& b) { return cross_entropy(linear(a, b), t); }, upstream), x, w);
    for (const int64_t chunk : {int64_t{1}, int64_t{5}, int64_t{8}, int64_t{21}, int64_t{0}}) {
      SCOPED_TRACE("upstream " + std::to_string(upstream) + " chunk " + std::to_string(chunk));
      const LossAndGrads got = run(
          scaled([&](const Tensor& a, const Tensor& b) { return linear_cross_entropy(a, b, t, -100, chunk); },
                 upstream),
          x, w);
      EXPECT_NEAR(got.loss.item(), want.loss.item(), 1e-12);
      EXPECT_TRUE(all_close(got.dx, want.dx, 1e-12, 0.0));
      EXPECT_TRUE(all_close(got.dw, want.dw, 1e-12, 0.0));
    }
  }
}

// Only x or only the weight requires grad, with an upstream gradient other than 1 and a padded
// vocabulary (11 classes to 16): the one asked for is right, the other gets nothing.
TEST(LinearCrossEntropy, OneSidedGradientsWithAnUpstreamGradient) {
  Generator g(72);
  const Tensor x = randn({9, 5}, DType::F64, Device::cpu(), &g);
  const Tensor w = randn({11, 5}, DType::F64, Device::cpu(), &g);
  const Tensor t = targets_of({9}, 11, 3, -100, 73);
  const LossAndGrads want = run(
      scaled([&](const Tensor& a, const Tensor& b) { return cross_entropy(linear(a, b), t); }, -2.5), x, w);
  const Tensor xl = x.clone().requires_grad_(true);
  mul(linear_cross_entropy(xl, w, t, -100, 4), -2.5).backward();
  EXPECT_TRUE(all_close(xl.grad(), want.dx, 1e-12, 0.0));
  EXPECT_FALSE(w.grad().defined());
  const Tensor wl = w.clone().requires_grad_(true);
  mul(linear_cross_entropy(x, wl, t, -100, 4), -2.5).backward();
  EXPECT_TRUE(all_close(wl.grad(), want.dw, 1e-12, 0.0));
  EXPECT_FALSE(x.grad().defined());
}

// A retained graph runs the node twice: the gradients accumulate to twice the composite's, so the
// node's own copies were not handed out and then summed into.
TEST(LinearCrossEntropy, RetainedGraphGivesTheSameGradientsTwice) {
  Generator g(74);
  const Tensor x = randn({6, 4}, DType::F64, Device::cpu(), &g);
  const Tensor w = randn({8, 4}, DType::F64, Device::cpu(), &g);
  const Tensor t = targets_of({6}, 8, 0, -100, 75);
  const LossAndGrads want = composite(x, w, t);
  const Tensor xl = x.clone().requires_grad_(true), wl = w.clone().requires_grad_(true);
  const Tensor loss = linear_cross_entropy(xl, wl, t, -100, 4);
  loss.backward(Tensor(), true);
  loss.backward();
  EXPECT_TRUE(all_close(xl.grad(), mul(want.dx, 2.0), 1e-12, 0.0));
  EXPECT_TRUE(all_close(wl.grad(), mul(want.dw, 2.0), 1e-12, 0.0));
}

// The call count of every profile entry whose name contains `part`, summed.
int64_t calls_of(const std::vector<ProfileEntry>& entries, const std::string& part) {
  int64_t n = 0;
  for (const ProfileEntry& e : entries) {
    if (e.name.find(part) != std::string::npos) n += e.calls;
  }
  return n;
}

// Under grad mode the forward runs each chunk's logits product and, right after, its two gradient
// products; the backward runs none. Without grad mode the forward runs the logits products only,
// records nothing and gives the same loss.
TEST(LinearCrossEntropy, GradientProductsRunInTheForwardOnlyUnderGradMode) {
  Generator g(76);
  const Tensor x = randn({20, 8}, DType::F32, Device::cpu(), &g).requires_grad_(true);
  const Tensor w = randn({30, 8}, DType::F32, Device::cpu(), &g).requires_grad_(true);
  const Tensor t = targets_of({20}, 30, 6, -100, 77);
  Tensor eval_loss;
  std::vector<ProfileEntry> eval;
  {
    Profiler profiler(Device::cpu());
    NoGradGuard no_grad;
    eval_loss = linear_cross_entropy(x, w, t, -100, 8);  // chunks of 8, 8 and 4 rows
    eval = profiler.finish();
  }
  EXPECT_FALSE(eval_loss.requires_grad());
  EXPECT_EQ(eval_loss.grad_fn(), nullptr);
  EXPECT_EQ(calls_of(eval, "linear in linear_cross_entropy"), 3);
  EXPECT_EQ(calls_of(eval, "gemm"), 0);

  Tensor loss;
  std::vector<ProfileEntry> train;
  {
    Profiler profiler(Device::cpu());
    loss = linear_cross_entropy(x, w, t, -100, 8);
    loss.backward();
    train = profiler.finish();
  }
  EXPECT_EQ(loss.item(), eval_loss.item());
  EXPECT_EQ(calls_of(train, "linear in linear_cross_entropy"), 3);
  EXPECT_EQ(calls_of(train, "gemm in linear_cross_entropy"), 6);  // dx rows and dW, per chunk
  EXPECT_EQ(calls_of(train, "linear in LinearCrossEntropyBackward"), 0);  // no logits recomputed
  EXPECT_EQ(calls_of(train, "gemm in LinearCrossEntropyBackward"), 0);
  const LossAndGrads want = composite(x, w, t);
  EXPECT_TRUE(all_close(x.grad(), want.dx, 1e-6 * max_abs(want.dx), 0.0));
  EXPECT_TRUE(all_close(w.grad(), want.dw, 1e-6 * max_abs(want.dw), 0.0));
}

// The node keeps dx (x's size and dtype) and dW in f32 over the padded vocabulary, not x or the
// weight: for bf16 x (12, 16) and a weight of 21 classes (padded to 24).
TEST(LinearCrossEntropy, NodeKeepsTheGradientsItFormed) {
  Generator g(78);
  const Tensor x = randn({12, 16}, DType::F32, Device::cpu(), &g).to(DType::BF16).requires_grad_(true);
  const Tensor w = randn({21, 16}, DType::F32, Device::cpu(), &g).to(DType::BF16).requires_grad_(true);
  const Tensor loss = linear_cross_entropy(x, w, targets_of({12}, 21, 0, -100, 79), -100, 5);
  ASSERT_NE(loss.grad_fn(), nullptr);
  const std::vector<Tensor> saved = loss.grad_fn()->saved_tensors();
  ASSERT_EQ(saved.size(), 2u);
  EXPECT_EQ(saved[0].shape(), (Shape{12, 16}));
  EXPECT_EQ(saved[0].dtype(), DType::BF16);
  EXPECT_EQ(saved[1].shape(), (Shape{24, 16}));
  EXPECT_EQ(saved[1].dtype(), DType::F32);
  // Only x needs a gradient: only dx is kept.
  const Tensor x_only = linear_cross_entropy(x, w.detach(), targets_of({12}, 21, 0, -100, 79), -100, 5);
  const std::vector<Tensor> kept = x_only.grad_fn()->saved_tensors();
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(kept[0].shape(), (Shape{12, 16}));
}

// The chunked op in f32 and in bf16 against the composite, with `classes` classes.
void expect_f32_and_bf16_track_the_composite(int64_t classes) {
  Generator g(50);
  const Tensor x32 = randn({3, 40, 16}, DType::F32, Device::cpu(), &g);
  const Tensor w32 = mul(randn({classes, 16}, DType::F32, Device::cpu(), &g), 0.25);
  const Tensor t = targets_of({3, 40}, classes, 7, -100, 51);
  {
    const LossAndGrads want = composite(x32, w32, t), got = chunked(x32, w32, t, 25);
    EXPECT_EQ(got.loss.dtype(), DType::F32);
    EXPECT_NEAR(got.loss.item(), want.loss.item(), 1e-6 * std::abs(want.loss.item()));
    EXPECT_TRUE(all_close(got.dx, want.dx, 1e-6 * max_abs(want.dx), 0.0));
    EXPECT_TRUE(all_close(got.dw, want.dw, 1e-6 * max_abs(want.dw), 0.0));
  }
  // bf16: the same bf16 logits and dlogits as the composite; dW sums bf16 chunk products in f32
  // where the composite rounds one product, so it differs by a few bf16 roundings (2^-8 each).
  const Tensor x = x32.to(DType::BF16), w = w32.to(DType::BF16);
  const LossAndGrads want = composite(x, w, t), got = chunked(x, w, t, 25);
  EXPECT_EQ(got.loss.dtype(), DType::F32);
  EXPECT_EQ(got.dx.dtype(), DType::BF16);
  EXPECT_EQ(got.dw.dtype(), DType::BF16);
  EXPECT_EQ(got.dw.shape(), w.shape());
  EXPECT_NEAR(got.loss.item(), want.loss.item(), 1e-5 * std::abs(want.loss.item()));
  EXPECT_TRUE(all_close(got.dx, want.dx, 1e-2 * max_abs(want.dx), 0.0));
  EXPECT_TRUE(all_close(got.dw, want.dw, 2e-2 * max_abs(want.dw), 0.0));
  // An upstream gradient of 0.37: one more rounding of each gradient than the composite's.
  const LossFn loss = [&](const Tensor& a, const Tensor& b) { return linear_cross_entropy(a, b, t, -100, 25); };
  const LossFn reference = [&](const Tensor& a, const Tensor& b) { return cross_entropy(linear(a, b), t); };
  const LossAndGrads want_scaled = run(scaled(reference, 0.37), x, w), got_scaled = run(scaled(loss, 0.37), x, w);
  EXPECT_EQ(got_scaled.dx.dtype(), DType::BF16);
  EXPECT_TRUE(all_close(got_scaled.dx, want_scaled.dx, 1.5e-2 * max_abs(want_scaled.dx), 0.0));
  EXPECT_TRUE(all_close(got_scaled.dw, want_scaled.dw, 2e-2 * max_abs(want_scaled.dw), 0.0));
}

// A vocabulary that is a multiple of 8 and an odd one (padded from 301 to 304).
TEST(LinearCrossEntropy, F32AndBf16TrackTheComposite) {
  for (const int64_t classes : {int64_t{296}, int64_t{301}}) {
    SCOPED_TRACE("classes " + std::to_string(classes));
    expect_f32_and_bf16_track_the_composite(classes);
  }
}

// Peak bytes the allocator held above its starting point while `f` ran.
int64_t peak_growth(Device device, const std::function<void()>& f) {
  const int64_t before = memory_stats(device).current_bytes;
  reset_peak_memory(device);
  f();
  return memory_stats(device).peak_bytes - before;
}

TEST(LinearCrossEntropy, NeverHoldsTheWholeLogits) {
  // rows x V logits (8 MiB in f32) dwarf x (32 KiB) and W (256 KiB).
  const int64_t rows = 512, dim = 16, classes = 4096;
  Generator g(52);
  const Tensor x = randn({rows, dim}, DType::F32, Device::cpu(), &g).requires_grad_(true);
  const Tensor w = mul(randn({classes, dim}, DType::F32, Device::cpu(), &g), 0.25).requires_grad_(true);
  const Tensor t = targets_of({rows}, classes, 0, -100, 53);
  const int64_t logits_bytes = rows * classes * 4;
  const int64_t chunked_peak = peak_growth(Device::cpu(), [&] { linear_cross_entropy(x, w, t, -100, 32).backward(); });
  // One chunk's logits (512 KiB), W's gradient and its chunk product, x's gradient, small vectors.
  EXPECT_LT(chunked_peak, logits_bytes / 4);
  // The measurement can fail: the composite holds the logits, and in its backward their gradient.
  const int64_t composite_peak = peak_growth(Device::cpu(), [&] { cross_entropy(linear(x, w), t).backward(); });
  EXPECT_GE(composite_peak, logits_bytes);
}

TEST(LinearCrossEntropy, Errors) {
  const Tensor x = zeros({3, 4}), w = zeros({5, 4});
  const Tensor t = from_vector<int64_t>({0, 1, 2}, {3});
  auto message_of = [](const std::function<void()>& f) { return testing::error_message(f); };
  const std::string features = message_of([&] { linear_cross_entropy(x, zeros({5, 3}), t); });
  EXPECT_NE(features.find("[linear_cross_entropy] x (3, 4) needs its last dim equal to weight (5, 3)'s D"),
            std::string::npos)
      << features;
  const std::string weight_dim = message_of([&] { linear_cross_entropy(x, zeros({5, 4, 1}), t); });
  EXPECT_NE(weight_dim.find("weight must be (V, D), got (5, 4, 1)"), std::string::npos) << weight_dim;
  const std::string dtype = message_of([&] { linear_cross_entropy(x, zeros({5, 4}, DType::F64), t); });
  EXPECT_NE(dtype.find("[linear_cross_entropy]"), std::string::npos) << dtype;
  const std::string shape = message_of([&] { linear_cross_entropy(x, w, from_vector<int64_t>({0, 1}, {2})); });
  EXPECT_NE(shape.find("x (3, 4) needs targets of shape (3), got (2)"), std::string::npos) << shape;
  const std::string tdtype = message_of([&] { linear_cross_entropy(x, w, zeros({3})); });
  EXPECT_NE(tdtype.find("targets must be i32 or i64, got f32"), std::string::npos) << tdtype;
  const std::string range = message_of([&] { linear_cross_entropy(x, w, from_vector<int64_t>({0, 5, 1}, {3})); });
  EXPECT_NE(range.find("[linear_cross_entropy] target id 5 at flat position 1 is outside [0, 5) for logits (3, 5)"),
            std::string::npos)
      << range;
  const std::string chunk = message_of([&] { linear_cross_entropy(x, w, t, -100, -1); });
  EXPECT_NE(chunk.find("chunk_rows must be >= 0"), std::string::npos) << chunk;
}

// The GPU (in each dtype, with chunks of `chunks` rows) against the CPU composite from the same
// dtype-rounded inputs. `peak_below_logits`: with chunks other than the default, the step's peak
// must stay below the size of the whole (rows, classes) logits.
void expect_gpu_matches_the_cpu(int64_t rows, int64_t dim, int64_t classes, const std::vector<DType>& dtypes,
                                const std::vector<int64_t>& chunks, bool peak_below_logits) {
  Generator g(54);
  const Tensor x = randn({rows, dim}, DType::F32, Device::cpu(), &g);
  const Tensor w = mul(randn({classes, dim}, DType::F32, Device::cpu(), &g), 1.0 / std::sqrt(static_cast<double>(dim)));
  const Tensor t = targets_of({rows}, classes, 9, -100, 55);
  const Device gpu = Device::cuda();
  for (const DType dtype : dtypes) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor xc = x.to(dtype).to(DType::F32), wc = w.to(dtype).to(DType::F32);
    const LossAndGrads want = composite(xc, wc, t);
    const Tensor xg = x.to(dtype).to(gpu), wg = w.to(dtype).to(gpu), tg = t.to(gpu);
    const double tol = dtype == DType::F32 ? 1e-4 : 2e-2;
    for (const int64_t chunk : chunks) {
      SCOPED_TRACE(chunk);
      LossAndGrads got;
      const int64_t peak = peak_growth(gpu, [&] { got = chunked(xg, wg, tg, chunk); });
      EXPECT_NEAR(got.loss.item(), want.loss.item(), (dtype == DType::F32 ? 1e-5 : 2e-3) * want.loss.item());
      EXPECT_EQ(got.dw.shape(), w.shape());
      EXPECT_TRUE(all_close(got.dx.to(Device::cpu()).to(DType::F32), want.dx, tol * max_abs(want.dx), 0.0));
      EXPECT_TRUE(all_close(got.dw.to(Device::cpu()).to(DType::F32), want.dw, tol * max_abs(want.dw), 0.0));
      if (peak_below_logits && chunk != 0) {
        EXPECT_LT(peak, rows * classes * static_cast<int64_t>(dtype_size(dtype)));
      }
    }
  }
}

// The head of the 125M model at 8192 tokens with a 32000 vocabulary (a multiple of 8: not
// padded): f32 and bf16. The default chunk (4160 rows) makes two chunks; with 1024 rows the
// step's peak stays below the size of the whole logits.
TEST(LinearCrossEntropy, GpuMatchesTheCpu) {
  LN_REQUIRE_GPU();
  expect_gpu_matches_the_cpu(8192, 768, 32000, {DType::F32, DType::BF16}, {0, 1024}, true);
}

// The presets' vocabulary, 50257, padded to 50264 for aligned GEMM rows, in bf16 at 4096 tokens:
// the default chunk (2624 rows) makes two chunks, 1000 rows five (the last one short). No peak
// bound: at 4096 rows the f32 weight gradient and the padded weight copy weigh as much as the
// logits.
TEST(LinearCrossEntropy, GpuPaddedVocabularyMatchesTheCpu) {
  LN_REQUIRE_GPU();
  expect_gpu_matches_the_cpu(4096, 768, 50257, {DType::BF16}, {0, 1000}, false);
}

// The gradients the GPU forms in its forward, with an upstream gradient of 0.37 (scaled on the
// device), with only x or only the weight requiring grad, and through a retained graph (run twice:
// the node's copies are not handed out), against the CPU composite; f32 and bf16, a padded
// vocabulary (75 classes to 80), chunks of 7 of 40 rows with ignored rows.
TEST(LinearCrossEntropy, GpuUpstreamGradientOneSidedAndRetainedGraph) {
  LN_REQUIRE_GPU();
  Generator g(80);
  const Tensor x = randn({40, 32}, DType::F32, Device::cpu(), &g);
  const Tensor w = mul(randn({75, 32}, DType::F32, Device::cpu(), &g), 0.2);
  const Tensor t = targets_of({40}, 75, 5, -100, 81);
  const Device gpu = Device::cuda();
  for (const DType dtype : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const double tol = dtype == DType::F32 ? 1e-5 : 2e-2;
    const Tensor xc = x.to(dtype).to(DType::F32), wc = w.to(dtype).to(DType::F32);
    const Tensor xg = x.to(dtype).to(gpu), wg = w.to(dtype).to(gpu), tg = t.to(gpu);
    const LossAndGrads want = run(
        scaled([&](const Tensor& a, const Tensor& b) { return cross_entropy(linear(a, b), t); }, 0.37), xc, wc);
    const auto host = [](const Tensor& v) { return v.to(Device::cpu()).to(DType::F32); };
    const LossAndGrads got = run(
        scaled([&](const Tensor& a, const Tensor& b) { return linear_cross_entropy(a, b, tg, -100, 7); }, 0.37), xg,
        wg);
    EXPECT_TRUE(all_close(host(got.dx), want.dx, tol * max_abs(want.dx), 0.0));
    EXPECT_TRUE(all_close(host(got.dw), want.dw, tol * max_abs(want.dw), 0.0));
    const Tensor xl = xg.clone().requires_grad_(true);
    mul(linear_cross_entropy(xl, wg, tg, -100, 7), 0.37).backward();
    EXPECT_TRUE(all_close(host(xl.grad()), want.dx, tol * max_abs(want.dx), 0.0));
    const Tensor wl = wg.clone().requires_grad_(true);
    mul(linear_cross_entropy(xg, wl, tg, -100, 7), 0.37).backward();
    EXPECT_TRUE(all_close(host(wl.grad()), want.dw, tol * max_abs(want.dw), 0.0));
    const Tensor xr = xg.clone().requires_grad_(true), wr = wg.clone().requires_grad_(true);
    const Tensor loss = linear_cross_entropy(xr, wr, tg, -100, 7);
    loss.backward(Tensor(), true);
    loss.backward();
    const LossAndGrads once = composite(xc, wc, t);
    EXPECT_TRUE(all_close(host(xr.grad()), mul(once.dx, 2.0), 2 * tol * max_abs(once.dx), 0.0));
    EXPECT_TRUE(all_close(host(wr.grad()), mul(once.dw, 2.0), 2 * tol * max_abs(once.dw), 0.0));
  }
}

}  // namespace
}  // namespace longnet
