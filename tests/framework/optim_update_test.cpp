// Fused AdamW and SGD updates: several steps against naive double-precision loops (bias
// corrections, decoupled and L2 weight decay, maximize, momentum variants), on contiguous, strided
// and large (multi-threaded) operands, with f32 / bf16 gradients; error messages; and CPU-vs-CUDA
// parity for f32, bf16 and f16 gradients on the vectorised and the strided kernels.
#include "framework/ops/optim_update.h"

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

Tensor random(const Shape& shape, uint64_t seed, DType dtype = DType::F32) {
  Generator g(seed);
  return cast(randn(shape, DType::F64, Device::cpu(), &g), dtype);
}

::testing::AssertionResult near(const std::vector<double>& got, const std::vector<double>& want, double atol,
                                double rtol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << got.size() << " values, expected " << want.size();
  }
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::abs(got[i] - want[i]) <= atol + rtol * std::abs(want[i]))) {
      return ::testing::AssertionFailure() << "element " << i << ": " << got[i] << " vs " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Naive Adam(W), written the way PyTorch documents it.
struct AdamRef {
  std::vector<double> p, m, v;

  void step(const std::vector<double>& grad, const AdamWParams& h) {
    const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
    const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
    for (size_t i = 0; i < p.size(); ++i) {
      double g = h.maximize ? -grad[i] : grad[i];
      if (h.l2_decay) {
        g += h.weight_decay * p[i];
      } else {
        p[i] *= 1.0 - h.lr * h.weight_decay;
      }
      m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g;
      v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g * g;
      const double denom = std::sqrt(v[i]) / std::sqrt(bc2) + h.eps;
      p[i] -= h.lr / bc1 * m[i] / denom;
    }
  }
};

// Naive SGD with momentum (PyTorch's torch.optim.SGD).
struct SgdRef {
  std::vector<double> p, buf;
  bool started = false;

  void step(const std::vector<double>& grad, const SgdParams& h) {
    for (size_t i = 0; i < p.size(); ++i) {
      double g = (h.maximize ? -grad[i] : grad[i]) + h.weight_decay * p[i];
      if (h.momentum != 0.0) {
        buf[i] = started ? h.momentum * buf[i] + (1.0 - h.dampening) * g : g;
        g = h.nesterov ? g + h.momentum * buf[i] : buf[i];
      }
      p[i] -= h.lr * g;
    }
    started = true;
  }
};

std::vector<AdamWParams> adam_configs() {
  std::vector<AdamWParams> c(4);
  for (AdamWParams& h : c) h.lr = 1e-2;
  c[1].weight_decay = 0.1;
  c[2].weight_decay = 0.05, c[2].l2_decay = true, c[2].beta1 = 0.8, c[2].beta2 = 0.95;
  c[3].weight_decay = 0.01, c[3].maximize = true, c[3].eps = 1e-6;
  return c;
}

std::string describe(const AdamWParams& h) {
  return "lr " + std::to_string(h.lr) + " wd " + std::to_string(h.weight_decay) + (h.l2_decay ? " l2" : "") +
         (h.maximize ? " maximize" : "") + " betas " + std::to_string(h.beta1) + "/" + std::to_string(h.beta2);
}

// Runs `steps` AdamW steps on a parameter made by `make` (from a contiguous leaf of `shape`) and
// compares parameter and both moments with the reference after every step.
void check_adam_against_reference(const Shape& shape, DType param_dtype, DType grad_dtype,
                                  const std::function<Tensor(const Tensor&)>& make, double atol, double rtol) {
  for (const AdamWParams& base : adam_configs()) {
    const Tensor param = make(random(shape, 1, param_dtype));
    const Tensor m = make(zeros(shape, param_dtype)), v = make(zeros(shape, param_dtype));
    AdamRef ref{param.to_vector<double>(), m.to_vector<double>(), v.to_vector<double>()};
    for (int64_t t = 1; t <= 5; ++t) {
      AdamWParams h = base;
      h.step = t;
      const Tensor grad = make(random(shape, 100 + static_cast<uint64_t>(t), grad_dtype));
      adamw_update_(param, grad, m, v, h);
      ref.step(grad.to_vector<double>(), h);
      const std::string what = describe(h) + " step " + std::to_string(t) + " " + shape_str(param.shape());
      ASSERT_TRUE(near(param.to_vector<double>(), ref.p, atol, rtol)) << "param, " << what;
      ASSERT_TRUE(near(m.to_vector<double>(), ref.m, atol, rtol)) << "exp_avg, " << what;
      ASSERT_TRUE(near(v.to_vector<double>(), ref.v, atol, rtol)) << "exp_avg_sq, " << what;
    }
  }
}

Tensor same(const Tensor& t) { return t; }
Tensor transposed(const Tensor& t) { return t.transpose(0, 1); }

TEST(OptimUpdate, AdamWMatchesReferenceOverSeveralSteps) {
  check_adam_against_reference({37, 53}, DType::F32, DType::F32, same, 1e-6, 1e-5);
  check_adam_against_reference({37, 53}, DType::F64, DType::F64, same, 1e-13, 1e-12);
}

TEST(OptimUpdate, AdamWOnStridedAndLargeOperands) {
  check_adam_against_reference({37, 53}, DType::F32, DType::F32, transposed, 1e-6, 1e-5);
  // Larger than one thread's share: the contiguous loop is split over threads.
  check_adam_against_reference({100003}, DType::F32, DType::F32, same, 1e-6, 1e-5);
}

TEST(OptimUpdate, AdamWWithSixteenBitGradients) {
  check_adam_against_reference({37, 53}, DType::F32, DType::BF16, same, 1e-6, 1e-5);
  check_adam_against_reference({37, 53}, DType::F32, DType::F16, transposed, 1e-6, 1e-5);
}

TEST(OptimUpdate, AdamWFirstStepMovesEachParameterByAboutLr) {
  // With zero moments the bias-corrected first step is lr * g / (|g| + eps): a check of the
  // corrections independent of the reference loop.
  const Tensor p = zeros({5}, DType::F64), m = zeros({5}, DType::F64), v = zeros({5}, DType::F64);
  const Tensor g = from_vector<double>({3.0, -0.5, 2e-3, -40.0, 1.0}, {5});
  AdamWParams h;
  h.lr = 0.1;
  h.eps = 0.0;
  adamw_update_(p, g, m, v, h);
  EXPECT_TRUE(near(p.to_vector<double>(), {-0.1, 0.1, -0.1, 0.1, -0.1}, 1e-15, 1e-12));
}

std::vector<SgdParams> sgd_configs() {
  std::vector<SgdParams> c(5);
  for (SgdParams& h : c) h.lr = 0.05;
  c[1].momentum = 0.9;
  c[2].momentum = 0.8, c[2].dampening = 0.3, c[2].weight_decay = 0.01;
  c[3].momentum = 0.9, c[3].nesterov = true, c[3].weight_decay = 0.1;
  c[4].momentum = 0.5, c[4].maximize = true;
  return c;
}

std::string describe(const SgdParams& h) {
  return "lr " + std::to_string(h.lr) + " momentum " + std::to_string(h.momentum) + " dampening " +
         std::to_string(h.dampening) + " wd " + std::to_string(h.weight_decay) + (h.nesterov ? " nesterov" : "") +
         (h.maximize ? " maximize" : "");
}

void check_sgd_against_reference(const Shape& shape, DType grad_dtype,
                                 const std::function<Tensor(const Tensor&)>& make) {
  for (const SgdParams& base : sgd_configs()) {
    const Tensor param = make(random(shape, 2));
    // The buffer holds garbage before the first step, which must overwrite it.
    const Tensor buf = base.momentum != 0.0 ? make(random(shape, 3)) : Tensor();
    SgdRef ref{param.to_vector<double>(), buf.defined() ? buf.to_vector<double>() : std::vector<double>()};
    for (int t = 1; t <= 4; ++t) {
      SgdParams h = base;
      h.first_step = t == 1;
      const Tensor grad = make(random(shape, 200 + static_cast<uint64_t>(t), grad_dtype));
      sgd_update_(param, grad, buf, h);
      ref.step(grad.to_vector<double>(), h);
      const std::string what = describe(h) + " step " + std::to_string(t) + " " + shape_str(param.shape());
      ASSERT_TRUE(near(param.to_vector<double>(), ref.p, 1e-6, 1e-5)) << "param, " << what;
      if (buf.defined()) {
        ASSERT_TRUE(near(buf.to_vector<double>(), ref.buf, 1e-6, 1e-5)) << "buffer, " << what;
      }
    }
  }
}

TEST(OptimUpdate, SgdMatchesReferenceOverSeveralSteps) {
  check_sgd_against_reference({41, 29}, DType::F32, same);
  check_sgd_against_reference({41, 29}, DType::F32, transposed);
  check_sgd_against_reference({70001}, DType::BF16, same);
}

TEST(OptimUpdate, UpdatesLeafParametersInPlaceWithoutRecording) {
  Tensor w = random({4, 3}, 5);
  w.requires_grad_();
  const void* data = w.raw_data();
  const Tensor g = random({4, 3}, 6), m = zeros({4, 3}), v = zeros({4, 3});
  const std::vector<double> before = w.to_vector<double>();
  {
    NoGradGuard no_grad;
    adamw_update_(w, g, m, v, AdamWParams{});
  }
  EXPECT_EQ(w.raw_data(), data);
  EXPECT_TRUE(w.is_leaf());
  EXPECT_TRUE(w.requires_grad());
  EXPECT_NE(w.to_vector<double>(), before);
}

TEST(OptimUpdate, ErrorsNameTheOpAndShapes) {
  const Tensor p = zeros({3, 4}), g = zeros({3, 4}), m = zeros({3, 4}), v = zeros({3, 4});
  const AdamWParams h;
  std::string msg = testing::error_message([&] { adamw_update_(p, zeros({4, 3}), m, v, h); });
  EXPECT_NE(msg.find("[adamw_update_]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4, 3)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 4)"), std::string::npos) << msg;

  msg = testing::error_message([&] { adamw_update_(p, g, zeros({3, 4}, DType::F64), v, h); });
  EXPECT_NE(msg.find("[adamw_update_] state f64 (3, 4)"), std::string::npos) << msg;

  msg = testing::error_message([&] { adamw_update_(zeros({3, 4}, DType::BF16), g, m, v, h); });
  EXPECT_NE(msg.find("parameters must be f32 or f64, got bf16 (3, 4)"), std::string::npos) << msg;

  const Tensor d = zeros({3, 4}, DType::F64);
  msg = testing::error_message([&] { adamw_update_(d, g, zeros({3, 4}, DType::F64), zeros({3, 4}, DType::F64), h); });
  EXPECT_NE(msg.find("[adamw_update_] gradient f32 (3, 4) does not fit parameter f64 (3, 4)"), std::string::npos) << msg;

  msg = testing::error_message([&] { adamw_update_(p, g, m, Tensor(), h); });
  EXPECT_NE(msg.find("[adamw_update_] undefined optimizer state for parameter (3, 4)"), std::string::npos) << msg;

  Tensor w = zeros({3, 4});
  w.requires_grad_();
  const Tensor y = mul(w, 2.0);
  msg = testing::error_message([&] { adamw_update_(y, g, m, v, h); });
  EXPECT_NE(msg.find("[adamw_update_] the parameter (3, 4) is the output of an op"), std::string::npos) << msg;

  AdamWParams bad = h;
  bad.beta2 = 1.0;
  msg = testing::error_message([&] { adamw_update_(p, g, m, v, bad); });
  EXPECT_NE(msg.find("[adamw_update_] beta2 must lie in [0, 1)"), std::string::npos) << msg;
  bad = h;
  bad.step = 0;
  msg = testing::error_message([&] { adamw_update_(p, g, m, v, bad); });
  EXPECT_NE(msg.find("[adamw_update_] step counts from 1"), std::string::npos) << msg;

  SgdParams s;
  s.momentum = 0.9;
  msg = testing::error_message([&] { sgd_update_(p, g, Tensor(), s); });
  EXPECT_NE(msg.find("[sgd_update_] undefined optimizer state for parameter (3, 4)"), std::string::npos) << msg;
  s.nesterov = true;
  s.dampening = 0.5;
  msg = testing::error_message([&] { sgd_update_(p, g, m, s); });
  EXPECT_NE(msg.find("[sgd_update_] nesterov momentum needs momentum > 0 and dampening 0"), std::string::npos) << msg;
  s = SgdParams{};
  s.lr = -1.0;
  msg = testing::error_message([&] { sgd_update_(p, g, Tensor(), s); });
  EXPECT_NE(msg.find("[sgd_update_] lr must be finite and >= 0"), std::string::npos) << msg;
}

TEST(OptimUpdate, EmptyParametersAreANoOp) {
  const Tensor p = zeros({0, 3}), g = zeros({0, 3}), m = zeros({0, 3}), v = zeros({0, 3});
  EXPECT_NO_THROW(adamw_update_(p, g, m, v, AdamWParams{}));
  EXPECT_NO_THROW(sgd_update_(p, g, Tensor(), SgdParams{}));
}

// ---- CPU vs CUDA ----

// How a parity case lays out its operands over the memory of contiguous tensors of numel + 1.
enum class Layout { Contiguous, Misaligned, Transposed };

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Contiguous: return "contiguous";
    case Layout::Misaligned: return "misaligned";
    default: return "transposed";
  }
}

// Rows and columns of the parity tensors: odd counts leave a tail after the 16-byte packs.
constexpr int64_t kRows = 1001, kCols = 999;

// The operand of `layout` viewed over `storage` (kRows * kCols + 1 elements).
Tensor lay_out(const Tensor& storage, Layout layout) {
  switch (layout) {
    case Layout::Contiguous: return storage.narrow(0, 0, kRows * kCols).view({kRows, kCols});
    case Layout::Misaligned: return storage.narrow(0, 1, kRows * kCols).view({kRows, kCols});  // 4-byte aligned
    default: return storage.narrow(0, 0, kRows * kCols).view({kCols, kRows}).transpose(0, 1);
  }
}

// Runs the same three updates on CPU and cuda:0 copies of the operands and compares them.
void check_parity(DType grad_dtype, Layout layout, bool adam) {
  const int64_t n = kRows * kCols + 1;
  std::vector<Tensor> cpu_state{random({n}, 11), mul(random({n}, 12), 0.1), mul(abs(random({n}, 13)), 0.01)};
  std::vector<Tensor> gpu_state;
  for (const Tensor& t : cpu_state) gpu_state.push_back(t.to(Device::cuda(0)));
  for (int64_t t = 1; t <= 3; ++t) {
    const Tensor g_cpu = random({n}, 20 + static_cast<uint64_t>(t), grad_dtype);
    const Tensor g_gpu = g_cpu.to(Device::cuda(0));
    for (bool on_gpu : {false, true}) {
      const std::vector<Tensor>& s = on_gpu ? gpu_state : cpu_state;
      const Tensor grad = lay_out(on_gpu ? g_gpu : g_cpu, layout);
      if (adam) {
        AdamWParams h;
        h.lr = 1e-2, h.weight_decay = 0.1, h.step = t;
        adamw_update_(lay_out(s[0], layout), grad, lay_out(s[1], layout), lay_out(s[2], layout), h);
      } else {
        SgdParams h;
        h.lr = 0.05, h.momentum = 0.9, h.nesterov = true, h.weight_decay = 0.01, h.first_step = t == 1;
        sgd_update_(lay_out(s[0], layout), grad, lay_out(s[1], layout), h);
      }
    }
  }
  const char* names[] = {"param", adam ? "exp_avg" : "momentum_buffer", "exp_avg_sq"};
  for (size_t i = 0; i < (adam ? 3u : 2u); ++i) {
    EXPECT_TRUE(near(gpu_state[i].to_vector<double>(), cpu_state[i].to_vector<double>(), 1e-6, 1e-5))
        << (adam ? "adamw " : "sgd ") << names[i] << ", " << dtype_name(grad_dtype) << " grad, "
        << layout_name(layout);
  }
}

TEST(OptimUpdateCuda, AdamWMatchesCpu) {
  LN_REQUIRE_GPU();
  for (DType g : {DType::F32, DType::BF16, DType::F16}) {
    for (Layout l : {Layout::Contiguous, Layout::Misaligned, Layout::Transposed}) check_parity(g, l, true);
  }
}

TEST(OptimUpdateCuda, SgdMatchesCpu) {
  LN_REQUIRE_GPU();
  for (DType g : {DType::F32, DType::BF16}) {
    for (Layout l : {Layout::Contiguous, Layout::Misaligned, Layout::Transposed}) check_parity(g, l, false);
  }
}

TEST(OptimUpdateCuda, SgdWithoutMomentumAndF64MatchCpu) {
  LN_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor p_cpu = random({4099}, 31, dt), g_cpu = random({4099}, 32, dt);
    const Tensor p_gpu = p_cpu.to(Device::cuda(0)), g_gpu = g_cpu.to(Device::cuda(0));
    SgdParams h;
    h.lr = 0.1, h.weight_decay = 0.2, h.maximize = true;
    sgd_update_(p_cpu, g_cpu, Tensor(), h);
    sgd_update_(p_gpu, g_gpu, Tensor(), h);
    EXPECT_TRUE(near(p_gpu.to_vector<double>(), p_cpu.to_vector<double>(), 1e-12, 1e-6)) << dtype_name(dt);
  }
}

}  // namespace
}  // namespace longnet
