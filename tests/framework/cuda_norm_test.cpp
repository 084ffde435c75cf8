// CPU-versus-CUDA parity of softmax / log-softmax, LayerNorm / RMSNorm and cross-entropy, forward
// and every input gradient, in f32 and bf16 (plus f16 / f64 spot checks), on contiguous and
// transposed inputs. Row lengths are chosen to reach every kernel shape: a warp per row, a block
// per row with the row in registers, and a block streaming rows too long to hold, each with and
// without 16-byte packs (lengths that are not multiples of 8 or of the block size).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/loss.h"
#include "framework/ops/norm.h"
#include "framework/ops/ops.h"
#include "framework/ops/softmax.h"
#include "tests/support/gradcheck.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace longnet {
namespace {

using testing::relative_error;

using testing::cpu_cuda_parity;

Tensor input(const Shape& shape, uint64_t seed, double lo = -3.0, double hi = 3.0) {
  Generator g(seed);
  NoGradGuard ng;
  return add(mul(rand(shape, DType::F32, Device::cpu(), &g), hi - lo), lo);
}

std::string label(const Shape& shape, DType dt, bool nc, const std::string& extra = "") {
  return shape_str(shape) + " " + dtype_name(dt) + (nc ? " transposed" : " contiguous") + extra;
}

// Row lengths by kernel shape (f32 / bf16 packs hold 4 / 8 elements; unpacked rows hold at most
// 8 values a thread; a block group that holds its row has at most 512 threads). Forward (softmax,
// norms): 129: warp, 8 values a lane; 384, 1000: warp, 32 values a lane; 301, 771, 2049
// (unpacked): block, 8 values a thread; 3000, 6000, 12000: block, 32 values a thread; 5001, 9001,
// 20001, 40000: streamed. Backward: 384: warp, 16 values a lane (bf16 norm; f32 norm: block);
// 772, 1000: block, 8 values a thread; 3000, 6000: block, 16 values a thread (f32 norm: 8, and
// 6000 streamed); 12000: streamed.
const std::vector<Shape>& row_shapes() {
  static const std::vector<Shape> shapes = {{37, 129}, {20, 301}, {40, 384}, {5, 772},   {3, 1000},
                                            {6, 771},  {4, 3000}, {3, 2049}, {3, 5001},  {3, 6000},
                                            {2, 9001}, {2, 12000}, {2, 20001}, {2, 40000}};
  return shapes;
}

TEST(CudaNorm, SoftmaxAndLogSoftmaxOverLastDim) {
  LN_REQUIRE_GPU();
  for (bool log : {false, true}) {
    for (const Shape& shape : row_shapes()) {
      const Tensor x = input(shape, 1);
      for (DType dt : {DType::F32, DType::BF16}) {
        for (bool nc : {false, true}) {
          EXPECT_TRUE(cpu_cuda_parity(
              [&](const std::vector<Tensor>& a) { return log ? log_softmax(a[0], -1) : softmax(a[0], -1); }, {x}, dt,
              true, nc))
              << (log ? "log_softmax " : "softmax ") << label(shape, dt, nc);
        }
      }
    }
  }
}

TEST(CudaNorm, SoftmaxAndLogSoftmaxOverOtherDims) {
  LN_REQUIRE_GPU();
  const Tensor x = input({6, 33, 7}, 2);
  for (bool log : {false, true}) {
    for (int64_t dim : {0, 1, 2}) {
      for (DType dt : {DType::F32, DType::BF16}) {
        for (bool nc : {false, true}) {
          EXPECT_TRUE(cpu_cuda_parity(
              [&](const std::vector<Tensor>& a) { return log ? log_softmax(a[0], dim) : softmax(a[0], dim); }, {x},
              dt, true, nc))
              << (log ? "log_softmax" : "softmax") << " dim " << dim << " " << label(x.shape(), dt, nc);
        }
      }
    }
  }
  // A long non-last dim goes through the block kernels.
  const Tensor tall = input({3000, 5}, 3);
  EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return softmax(a[0], 0); }, {tall}, DType::F32));
}

TEST(CudaNorm, SoftmaxOfMaskedRows) {
  LN_REQUIRE_GPU();
  // Row 1 fully masked (softmax 0, log-softmax -inf), row 2 partly masked.
  std::vector<float> v = input({4, 300}, 4).to_vector<float>();
  for (size_t j = 0; j < 300; ++j) v[300 + j] = -INFINITY;
  for (size_t j = 0; j < 300; j += 3) v[600 + j] = -INFINITY;
  const Tensor x = from_vector(v, {4, 300});
  for (DType dt : {DType::F32, DType::BF16}) {
    EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return softmax(a[0]); }, {x}, dt))
        << dtype_name(dt);
    EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return log_softmax(a[0]); }, {x}, dt))
        << dtype_name(dt);
  }
  const Tensor y = softmax(x.to(Device::cuda(0))).to(Device::cpu());
  const std::vector<float> yv = y.to_vector<float>();
  for (size_t j = 0; j < 300; ++j) ASSERT_EQ(yv[300 + j], 0.0f) << j;
}

TEST(CudaNorm, SoftmaxHalfAndDouble) {
  LN_REQUIRE_GPU();
  for (const Shape& shape : {Shape{7, 100}, Shape{3, 3000}, Shape{2, 40000}}) {
    for (DType dt : {DType::F16, DType::F64}) {
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return log_softmax(a[0]); }, {input(shape, 5)},
                                  dt))
          << label(shape, dt, false);
    }
  }
}

// Norm shapes add many rows per block (300 x 64) for the parameter-gradient partial sums.
std::vector<Shape> norm_shapes() {
  std::vector<Shape> s = row_shapes();
  s.push_back({300, 64});
  s.push_back({4, 5, 96});
  s.push_back({130, 513});
  return s;
}

// Many rows per group: every block of the grid loops over rows with the next ones loaded ahead,
// block groups sharing a block run in step past the last row, and the norm backward's partial
// sums take one stage (block groups: a few hundred partial rows) or two (thousands of warp
// groups, 4000 x 200).
TEST(CudaNorm, ManyRowsPerGroup) {
  LN_REQUIRE_GPU();
  for (const Shape& shape : {Shape{2001, 1024}, Shape{3001, 768}, Shape{1501, 4096}, Shape{4000, 200}}) {
    const int64_t d = shape.back();
    const Tensor x = input(shape, 30), w = input({d}, 31, 0.5, 1.5), b = input({d}, 32, -0.5, 0.5);
    for (DType dt : {DType::F32, DType::BF16}) {
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return softmax(a[0], -1); }, {x}, dt))
          << "softmax " << label(shape, dt, false);
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return log_softmax(a[0], -1); }, {x}, dt))
          << "log_softmax " << label(shape, dt, false);
      EXPECT_TRUE(cpu_cuda_parity(
          [](const std::vector<Tensor>& a) { return layer_norm(a[0], a[1], a[2], 1e-5); }, {x, w, b}, dt))
          << "layer_norm " << label(shape, dt, false);
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return rms_norm(a[0], a[1], 1e-6); }, {x, w},
                                  dt))
          << "rms_norm " << label(shape, dt, false);
    }
  }
}

TEST(CudaNorm, LayerNormWithAndWithoutAffine) {
  LN_REQUIRE_GPU();
  for (const Shape& shape : norm_shapes()) {
    const int64_t d = shape.back();
    const Tensor x = input(shape, 6), w = input({d}, 7, 0.5, 1.5), b = input({d}, 8, -0.5, 0.5);
    for (DType dt : {DType::F32, DType::BF16}) {
      for (bool nc : {false, true}) {
        EXPECT_TRUE(cpu_cuda_parity(
            [](const std::vector<Tensor>& a) { return layer_norm(a[0], a[1], a[2], 1e-5); }, {x, w, b}, dt, true, nc))
            << "layer_norm affine " << label(shape, dt, nc);
        EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return layer_norm(a[0], Tensor(), Tensor()); },
                                    {x}, dt, true, nc))
            << "layer_norm plain " << label(shape, dt, nc);
      }
    }
  }
  // Weight without bias.
  const Tensor x = input({17, 130}, 9), w = input({130}, 10);
  EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return layer_norm(a[0], a[1], Tensor()); }, {x, w},
                              DType::F32));
}

// A pre-norm residual block, 2 (h + P norm(h)): the norm's backward adds its dx into the skip's
// gradient (the engine's sink) as it writes, on every row shape, packed and not. The final
// scaling hands add a fresh gradient (the caller's upstream one is never written in place). The
// gradient of h, the one the sink forms, is compared as a whole: its elements are sums that
// cancel, which an elementwise tolerance would judge by their rounding rather than the kernel's.
TEST(CudaNorm, NormBackwardIntoTheResidualGradient) {
  LN_REQUIRE_GPU();
  for (const Shape& shape : norm_shapes()) {
    const int64_t d = shape.back();
    if (d > 6000) continue;  // a (d, d) projection; 6000 already streams the f32 backward's rows
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));
    const Tensor x = input(shape, 11), w = input({d}, 12, 0.5, 1.5), b = input({d}, 13, -0.5, 0.5);
    const Tensor proj = input({d, d}, 14, -scale, scale), up = input(shape, 15);
    for (DType dt : {DType::F32, DType::BF16}) {
      for (bool rms : {false, true}) {
        const auto run = [&](Device dev) {
          Tensor leaf = x.to(dt).to(dev).detach();
          leaf.requires_grad_(true);
          const Tensor h = mul(leaf, 1.0);
          const Tensor n = rms ? rms_norm(h, w.to(dt).to(dev)) : layer_norm(h, w.to(dt).to(dev), b.to(dt).to(dev));
          const Tensor y = mul(add(h, linear(n, proj.to(dt).to(dev), Tensor())), 2.0);
          y.backward(up.to(dt).to(dev));
          return std::make_pair(y.to(Device::cpu()), leaf.grad().to(Device::cpu()));
        };
        const auto ref = run(Device::cpu()), got = run(Device::cuda(0));
        const double tol = dt == DType::BF16 ? 1e-2 : 1e-5;
        const std::string what = std::string(rms ? "rms_norm" : "layer_norm") + " residual " + label(shape, dt, false);
        EXPECT_LT(relative_error(got.first, ref.first), tol) << "output, " << what;
        EXPECT_LT(relative_error(got.second, ref.second), tol) << "gradient, " << what;
      }
    }
  }
}

TEST(CudaNorm, RmsNormWithAndWithoutWeight) {
  LN_REQUIRE_GPU();
  for (const Shape& shape : norm_shapes()) {
    const Tensor x = input(shape, 11), w = input({shape.back()}, 12, 0.5, 1.5);
    for (DType dt : {DType::F32, DType::BF16}) {
      for (bool nc : {false, true}) {
        EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return rms_norm(a[0], a[1], 1e-6); }, {x, w},
                                    dt, true, nc))
            << "rms_norm weight " << label(shape, dt, nc);
        EXPECT_TRUE(
            cpu_cuda_parity([](const std::vector<Tensor>& a) { return rms_norm(a[0], Tensor()); }, {x}, dt, true, nc))
            << "rms_norm plain " << label(shape, dt, nc);
      }
    }
  }
}

TEST(CudaNorm, GeluNormsOnEveryRowShape) {
  LN_REQUIRE_GPU();
  for (const Shape& shape : norm_shapes()) {
    const int64_t d = shape.back();
    const Tensor x = input(shape, 16), w = input({d}, 17, 0.5, 1.5), b = input({d}, 18, -0.5, 0.5);
    for (DType dt : {DType::F32, DType::BF16}) {
      EXPECT_TRUE(cpu_cuda_parity(
          [](const std::vector<Tensor>& a) { return gelu_layer_norm(a[0], a[1], a[2], 1e-5); }, {x, w, b}, dt))
          << "gelu_layer_norm " << label(shape, dt, false);
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return gelu_rms_norm(a[0], a[1], 1e-6); },
                                  {x, w}, dt))
          << "gelu_rms_norm " << label(shape, dt, false);
    }
  }
}

TEST(CudaNorm, NormHalfAndDouble) {
  LN_REQUIRE_GPU();
  for (const Shape& shape : {Shape{33, 64}, Shape{5, 3000}, Shape{2, 12000}}) {
    const Tensor x = input(shape, 13), w = input({shape.back()}, 14), b = input({shape.back()}, 15);
    for (DType dt : {DType::F16, DType::F64}) {
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return layer_norm(a[0], a[1], a[2]); },
                                  {x, w, b}, dt))
          << label(shape, dt, false);
    }
  }
}

TEST(CudaNorm, NormParameterGradientsAreDeterministic) {
  LN_REQUIRE_GPU();
  for (const Shape& shape : {Shape{1000, 256}, Shape{64, 9000}}) {
    const Tensor x = input(shape, 16).to(Device::cuda(0));
    const Tensor up = input(shape, 17).to(Device::cuda(0));
    std::vector<std::vector<float>> runs;
    for (int run = 0; run < 2; ++run) {
      Tensor w = ones({shape.back()}, DType::F32, Device::cuda(0)).requires_grad_(true);
      Tensor b = zeros({shape.back()}, DType::F32, Device::cuda(0)).requires_grad_(true);
      layer_norm(x, w, b).backward(up);
      std::vector<float> v = w.grad().to(Device::cpu()).to_vector<float>();
      const std::vector<float> vb = b.grad().to(Device::cpu()).to_vector<float>();
      v.insert(v.end(), vb.begin(), vb.end());
      runs.push_back(v);
    }
    EXPECT_EQ(runs[0], runs[1]) << shape_str(shape);
  }
}

// Targets in [0, classes) with every `ignore_every`-th set to `ignore`.
Tensor targets(int64_t rows, int64_t classes, uint64_t seed, int64_t ignore, int64_t ignore_every,
               DType dtype = DType::I64) {
  Generator g(seed);
  std::vector<int64_t> t = randint(0, classes, {rows}, DType::I64, Device::cpu(), &g).to_vector<int64_t>();
  for (size_t i = 0; ignore_every > 0 && i < t.size(); i += static_cast<size_t>(ignore_every)) t[i] = ignore;
  return from_vector(t, {rows}).to(dtype);
}

TEST(CudaNorm, CrossEntropyLargeVocabulary) {
  LN_REQUIRE_GPU();
  const Tensor x = input({13, 50257}, 17, -4.0, 4.0);
  const Tensor t = targets(13, 50257, 18, -100, 5);
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool nc : {false, true}) {
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return cross_entropy(a[0], a[1]); }, {x, t}, dt,
                                  true, nc))
          << label(x.shape(), dt, nc);
    }
  }
}

TEST(CudaNorm, CrossEntropyOddSizesLeadingDimsAndIgnoreIndex) {
  LN_REQUIRE_GPU();
  struct Case {
    Shape shape;
    int64_t ignore;
    int64_t every;
    DType target_dtype;
  };
  const std::vector<Case> cases = {{{37, 771}, -100, 4, DType::I64},  {{300, 33}, -100, 7, DType::I64},
                                   {{5, 7, 10}, 3, 0, DType::I32},    {{6, 100}, -100, 1, DType::I64},
                                   {{9, 3001}, 2999, 2, DType::I32},  {{2, 70000}, -100, 0, DType::I64}};
  for (const Case& c : cases) {
    const int64_t classes = c.shape.back();
    const int64_t rows = numel_of(c.shape) / classes;
    const Shape lead(c.shape.begin(), c.shape.end() - 1);
    const Tensor x = input(c.shape, 19);
    const Tensor t = reshape(targets(rows, classes, 20, c.ignore, c.every, c.target_dtype), lead);
    for (DType dt : {DType::F32, DType::BF16}) {
      for (bool nc : {false, true}) {
        EXPECT_TRUE(cpu_cuda_parity(
            [&](const std::vector<Tensor>& a) { return cross_entropy(a[0], a[1], c.ignore); }, {x, t}, dt, true, nc))
            << label(c.shape, dt, nc, " ignore " + std::to_string(c.ignore));
      }
    }
  }
}

TEST(CudaNorm, CrossEntropyStaysOnTheDevice) {
  LN_REQUIRE_GPU();
  const Tensor x = input({8, 50}, 21).to(DType::BF16).to(Device::cuda(0));
  const Tensor loss = cross_entropy(x, targets(8, 50, 22, -100, 3).to(Device::cuda(0)));
  EXPECT_TRUE(loss.device().is_cuda());
  EXPECT_EQ(loss.dtype(), DType::F32);
  EXPECT_EQ(loss.shape(), Shape{});
  // Every target ignored: loss 0 and a zero gradient.
  Tensor leaf = input({4, 50}, 23).to(Device::cuda(0)).requires_grad_(true);
  const Tensor none = cross_entropy(leaf, full({4}, -100.0, DType::I64, Device::cuda(0)));
  EXPECT_EQ(none.item(), 0.0);
  none.backward();
  EXPECT_EQ(leaf.grad().to(Device::cpu()).to_vector<float>(), std::vector<float>(200, 0.0f));
}

// Sets (or with a null value unsets) an environment variable for its scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_.c_str(), old_.c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

// Targets of a (6, 10) batch: row 1 ignored, row 3 `bad`, row 5 bad (12).
Tensor bad_targets(int64_t bad) {
  return from_vector(std::vector<int64_t>{1, -100, 3, bad, 0, 12}, {6}).to(Device::cuda(0));
}

TEST(CudaNorm, CrossEntropyBadTargetsGiveNaNWithoutWaiting) {
  LN_REQUIRE_GPU();
  const ScopedEnv unset("LONGNET_CHECK_TARGETS", nullptr);
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t bad : {10, -1}) {
      Tensor x = input({6, 10}, 24).to(dt).to(Device::cuda(0)).requires_grad_(true);
      const Tensor loss = cross_entropy(x, bad_targets(bad));
      EXPECT_TRUE(std::isnan(loss.item())) << dtype_name(dt) << " target " << bad;
      loss.backward();
      const std::vector<float> g = x.grad().to(DType::F32).to(Device::cpu()).to_vector<float>();
      for (size_t r = 0; r < 6; ++r) {
        for (size_t j = 0; j < 10; ++j) {
          const float v = g[r * 10 + j];
          if (r == 3 || r == 5) {
            EXPECT_TRUE(std::isnan(v)) << "row " << r << " class " << j;
          } else if (r == 1) {
            EXPECT_EQ(v, 0.0f) << "ignored row, class " << j;
          } else {
            EXPECT_TRUE(std::isfinite(v)) << "row " << r << " class " << j;
          }
        }
      }
    }
  }
}

TEST(CudaNorm, CrossEntropyRaisesOnBadTargetsWhenAsked) {
  LN_REQUIRE_GPU();
  const ScopedEnv on("LONGNET_CHECK_TARGETS", "1");
  const Tensor x = input({6, 10}, 24).to(Device::cuda(0));
  for (int64_t bad : {10, -1}) {
    try {
      cross_entropy(x, bad_targets(bad));
      ADD_FAILURE() << "no error for target " << bad;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("[cross_entropy]"), std::string::npos) << msg;
      EXPECT_NE(msg.find("target id " + std::to_string(bad) + " at flat position 3"), std::string::npos) << msg;
      EXPECT_NE(msg.find("(6, 10)"), std::string::npos) << msg;
    }
  }
  // Good targets pass the check and give the same loss as without it.
  const Tensor t = from_vector(std::vector<int64_t>{1, -100, 3, 9, 0, 2}, {6});
  const double checked = cross_entropy(x, t.to(Device::cuda(0))).item();
  EXPECT_NEAR(checked, cross_entropy(x.to(Device::cpu()), t).item(), 1e-5);
}

}  // namespace
}  // namespace longnet
