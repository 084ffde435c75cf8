// The fused CUDA cross-entropy (loss and gradient in one read of each row, the row held in shared
// memory): bit for bit the two-kernel path (cross_entropy_rows, then cross_entropy_backward) and
// close to a naive reference, in every dtype, with rows at every alignment, ignored rows and a bad
// target; its capacity and the fallback past it; and linear_cross_entropy on the GPU, on shapes
// that take the fused path and shapes that take the fallback, against the CPU. GPU-only: each test
// skips with a visible message without a device.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/context.h"
#include "framework/cuda/loss.h"
#endif
#include "framework/ops/loss.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

#ifdef LONGNET_WITH_CUDA
using testing::all_close;

constexpr int64_t kIgnore = -100;

// The device the tests run on.
int gpu() { return Device::cuda().index; }

// The bytes of a tensor copied to the host, for bit-for-bit comparisons (NaN payloads included).
std::vector<unsigned char> bytes_of(const Tensor& t) {
  const Tensor h = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const unsigned char*>(h.raw_data());
  return {p, p + static_cast<size_t>(h.numel()) * dtype_size(h.dtype())};
}

// A padded logits block on the GPU: (rows, ld) in `dtype`, its first `classes` columns random
// (scaled by 3) and the rest `pad`; `dense` gets the same first columns in f64 as the GPU sees them.
Tensor padded_logits(int64_t rows, int64_t classes, int64_t ld, DType dtype, double pad, uint64_t seed, Tensor* dense) {
  Generator g(seed);
  const Tensor values = mul(randn({rows, classes}, DType::F32, Device::cpu(), &g), 3.0).to(dtype);
  *dense = values.to(DType::F64);
  const Tensor block = full({rows, ld}, pad, dtype, Device::cpu());
  copy_(narrow(block, 1, 0, classes), values);
  return block.to(Device::cuda());
}

// What a loss-and-gradient pass leaves on the device.
struct Outputs {
  Tensor lse, row_loss, dlogits;  // (rows) in the loss dtype, (rows) likewise, (rows, ld)
};

cpu::CrossEntropyParams params_of(const Tensor& logits, const Tensor& t, const Tensor& lse, int64_t classes) {
  return {logits.raw_data(), t.raw_data(), lse.raw_data(), logits.dtype(), t.dtype(), logits.size(0), classes,
          kIgnore, logits.size(1)};
}

DType loss_dtype_of(DType dtype) { return dtype == DType::F64 ? DType::F64 : DType::F32; }

Outputs empty_outputs(const Tensor& logits) {
  const DType dt = loss_dtype_of(logits.dtype());
  return {full({logits.size(0)}, 7.0, dt, logits.device()), full({logits.size(0)}, 7.0, dt, logits.device()),
          logits.clone()};
}

// The two-kernel path: lse and row losses, then dlogits in place over a copy of the logits.
Outputs two_kernels(const Tensor& logits, const Tensor& t, int64_t classes, const Tensor& count) {
  Outputs o = empty_outputs(logits);
  const cpu::CrossEntropyParams p = params_of(logits, t, o.lse, classes);
  cuda::cross_entropy_rows(gpu(), p, o.row_loss.raw_data());
  cuda::cross_entropy_backward(gpu(),
                               {o.dlogits.raw_data(), t.raw_data(), o.lse.raw_data(), o.dlogits.raw_data(),
                                logits.dtype(), t.dtype(), logits.size(0), classes, kIgnore, 1.0, logits.size(1)},
                               nullptr, count.data<int64_t>());
  return o;
}

// The fused path, in place over a copy of the logits or into a block of `pad` values; `ran` gets
// what it returns.
Outputs fused(const Tensor& logits, const Tensor& t, int64_t classes, const Tensor& count, bool in_place,
              double pad, bool* ran) {
  Outputs o = empty_outputs(logits);
  const Tensor source = in_place ? o.dlogits : logits;
  if (!in_place) o.dlogits = full(logits.shape(), pad, logits.dtype(), logits.device());
  *ran = cuda::cross_entropy_rows_backward(gpu(), params_of(source, t, o.lse, classes), o.row_loss.raw_data(),
                                           o.dlogits.raw_data(), count.data<int64_t>());
  return o;
}

// A naive reference in f64 over `dense` (rows, classes): per row the log-sum-exp and the loss, and
// the gradient (softmax - onehot) / count over the counted rows; ignored rows 0 throughout, a bad
// target's row (outside [0, classes)) a NaN loss and gradient.
struct Reference {
  Tensor lse, row_loss, dlogits;
};
Reference naive(const Tensor& dense, const std::vector<int64_t>& t) {
  const auto rows = static_cast<size_t>(dense.size(0)), classes = static_cast<size_t>(dense.size(1));
  const std::vector<double> x = dense.to_vector<double>();
  const auto bad = [&](int64_t v) { return v != kIgnore && (v < 0 || v >= static_cast<int64_t>(classes)); };
  double count = 0;
  for (const int64_t v : t) count += v != kIgnore && !bad(v) ? 1.0 : 0.0;
  std::vector<double> lse(rows, 0.0), loss(rows, 0.0), d(rows * classes, 0.0);
  for (size_t r = 0; r < rows; ++r) {
    if (t[r] == kIgnore) continue;
    const double* row = &x[r * classes];
    const double m = *std::max_element(row, row + classes);
    double s = 0.0;
    for (size_t j = 0; j < classes; ++j) s += std::exp(row[j] - m);
    lse[r] = m + std::log(s);
    loss[r] = bad(t[r]) ? NAN : lse[r] - row[t[r]];
    for (size_t j = 0; j < classes; ++j) {
      d[r * classes + j] =
          bad(t[r]) ? NAN : (std::exp(row[j] - lse[r]) - (static_cast<int64_t>(j) == t[r] ? 1.0 : 0.0)) / count;
    }
  }
  const auto n = static_cast<int64_t>(rows);
  return {from_vector(lse, {n}), from_vector(loss, {n}), from_vector(d, {n, static_cast<int64_t>(classes)})};
}

// Targets for `rows` rows: random below `classes`, rows 1 and 30 ignored, row 7 bad (= classes).
std::vector<int64_t> test_targets(int64_t rows, int64_t classes, uint64_t seed) {
  Generator g(seed);
  std::vector<int64_t> t = randint(0, classes, {rows}, DType::I64, Device::cpu(), &g).to_vector<int64_t>();
  t[1] = t[30] = kIgnore;
  t[7] = classes;
  return t;
}

// The GPU's count of counted rows for targets t (ignored and bad rows left out).
Tensor device_count(const Tensor& t, int64_t classes) {
  const Tensor count = Tensor::empty({}, DType::I64, t.device());
  cuda::cross_entropy_count(gpu(), {nullptr, t.raw_data(), nullptr, DType::F32, t.dtype(), t.numel(), classes, kIgnore},
                            count.data<int64_t>());
  return count;
}

struct Layout {
  int64_t classes, ld;
};

// Fused against the two kernels (bit for bit) and the naive reference, in place and into another
// block whose pad must stay as it was.
void expect_fused_equals_two_kernels(DType dtype, DType target_dtype, const Layout& l) {
  const int64_t rows = 40;
  const double pad = 8192.0;  // exact in every dtype, far above every logit
  Tensor dense;
  const Tensor logits = padded_logits(rows, l.classes, l.ld, dtype, pad, 90, &dense);
  const std::vector<int64_t> tv = test_targets(rows, l.classes, 91);
  const Tensor t = from_vector(tv, {rows}).to(target_dtype).to(Device::cuda());
  const Tensor count = device_count(t, l.classes);
  const Outputs want = two_kernels(logits, t, l.classes, count);
  const Reference ref = naive(dense, tv);
  const bool wide = dtype == DType::F64;
  // The GPU's exponential is MUFU.EX2 in f32 (relative error about 2^-22); its gradients are rounded
  // to the dtype.
  const double lse_tol = wide ? 1e-12 : 1e-5;
  const double grad_tol = (wide ? 1e-12 : dtype == DType::F32 ? 1e-5 : 1e-2) / static_cast<double>(rows - 3);
  for (const bool in_place : {true, false}) {
    SCOPED_TRACE(in_place ? "in place" : "into another block");
    bool ran = false;
    const Outputs got = fused(logits, t, l.classes, count, in_place, pad, &ran);
    ASSERT_TRUE(ran);
    EXPECT_EQ(bytes_of(got.lse), bytes_of(want.lse));
    EXPECT_EQ(bytes_of(got.row_loss), bytes_of(want.row_loss));
    EXPECT_EQ(bytes_of(got.dlogits), bytes_of(want.dlogits));  // pads alike: `pad` in both
    // Against the reference: the ignored rows' lse is 0 on both sides, the bad row's lse is read
    // and compared like any other.
    EXPECT_TRUE(all_close(got.lse.to(Device::cpu()).to(DType::F64), ref.lse, lse_tol, lse_tol));
    EXPECT_TRUE(all_close(got.row_loss.to(Device::cpu()).to(DType::F64), ref.row_loss, lse_tol, lse_tol));
    const Tensor d = got.dlogits.to(Device::cpu()).to(DType::F64);
    EXPECT_TRUE(all_close(narrow(d, 1, 0, l.classes).contiguous(), ref.dlogits, grad_tol, 0.0));
    for (const double v : narrow(d, 1, l.classes, l.ld - l.classes).contiguous().to_vector<double>()) {
      ASSERT_EQ(v, pad);
    }
  }
}
#endif

// Every dtype and both target dtypes; an odd stride (1009: rows start at every alignment) and the
// LM head's 50257 classes padded to 50264 (bf16, f16, f32; f64 rows of that size do not fit, so
// f64 takes 3001 at stride 3003 instead).
TEST(CrossEntropyFused, EqualsTheTwoKernelsBitForBitAndTheNaiveReference) {
  LN_REQUIRE_GPU();
#ifdef LONGNET_WITH_CUDA
  for (const DType dtype : {DType::BF16, DType::F16, DType::F32, DType::F64}) {
    const Layout big = dtype == DType::F64 ? Layout{3001, 3003} : Layout{50257, 50264};
    for (const Layout& l : {Layout{1001, 1009}, big}) {
      for (const DType target_dtype : {DType::I64, DType::I32}) {
        SCOPED_TRACE(std::string(dtype_name(dtype)) + " " + dtype_name(target_dtype) + " classes " +
                     std::to_string(l.classes) + " ld " + std::to_string(l.ld));
        ASSERT_LE(l.classes, cuda::cross_entropy_fused_classes(gpu(), dtype, target_dtype));
        expect_fused_equals_two_kernels(dtype, target_dtype, l);
      }
    }
  }
#endif
}

// Every target ignored: the count is 0, and the fused gradient is 0 like the two kernels'.
TEST(CrossEntropyFused, AllIgnoredGivesZeroes) {
  LN_REQUIRE_GPU();
#ifdef LONGNET_WITH_CUDA
  Tensor dense;
  const Tensor logits = padded_logits(5, 300, 304, DType::BF16, 0.0, 92, &dense);
  const Tensor t = full({5}, static_cast<double>(kIgnore), DType::I64, Device::cuda());
  const Tensor count = device_count(t, 300);
  bool ran = false;
  const Outputs got = fused(logits, t, 300, count, true, 0.0, &ran);
  ASSERT_TRUE(ran);
  EXPECT_EQ(bytes_of(got.dlogits), bytes_of(two_kernels(logits, t, 300, count).dlogits));
  for (const double v : got.dlogits.to(Device::cpu()).to_vector<double>()) ASSERT_EQ(v, 0.0);
  for (const double v : got.row_loss.to(Device::cpu()).to_vector<double>()) ASSERT_EQ(v, 0.0);
#endif
}

// The capacity follows the device's opt-in shared memory: an f32 row of exactly the capacity, at
// every alignment, takes the fused path (and gives the two kernels' bits); one class more launches
// nothing and returns false.
TEST(CrossEntropyFused, TakesRowsUpToItsCapacityAndNoMore) {
  LN_REQUIRE_GPU();
#ifdef LONGNET_WITH_CUDA
  const int64_t most = cuda::cross_entropy_fused_classes(gpu(), DType::F32, DType::I64);
  const int64_t optin = static_cast<int64_t>(cuda::properties(gpu()).sharedMemPerBlockOptin);
  EXPECT_LE(most * 4, optin);
  EXPECT_GT((most + 4) * 4, optin - 1024) << "the capacity leaves opt-in shared memory unused";
  const int64_t rows = 4;
  for (const int64_t classes : {most, most + 1}) {
    SCOPED_TRACE("classes " + std::to_string(classes) + " (capacity " + std::to_string(most) + ")");
    const int64_t ld = classes + (5 - classes % 4) % 4;  // ld % 4 == 1: rows 0-3 at every alignment
    Tensor dense;
    const Tensor logits = padded_logits(rows, classes, ld, DType::F32, 0.0, 93, &dense);
    const Tensor t = from_vector<int64_t>({3, classes - 1, 0, classes / 2}, {rows}, Device::cuda());
    const Tensor count = device_count(t, classes);
    bool ran = false;
    const Outputs got = fused(logits, t, classes, count, true, 0.0, &ran);
    if (classes == most) {
      ASSERT_TRUE(ran);
      const Outputs want = two_kernels(logits, t, classes, count);
      EXPECT_EQ(bytes_of(got.lse), bytes_of(want.lse));
      EXPECT_EQ(bytes_of(got.row_loss), bytes_of(want.row_loss));
      EXPECT_EQ(bytes_of(got.dlogits), bytes_of(want.dlogits));
    } else {
      EXPECT_FALSE(ran);
      EXPECT_EQ(bytes_of(got.dlogits), bytes_of(logits));  // untouched
      for (const double v : got.lse.to(Device::cpu()).to_vector<double>()) ASSERT_EQ(v, 7.0);
    }
  }
#endif
}

TEST(CrossEntropyFused, RejectsDlogitsAtAnotherOffset) {
  LN_REQUIRE_GPU();
#ifdef LONGNET_WITH_CUDA
  Tensor dense;
  const Tensor logits = padded_logits(2, 100, 104, DType::F32, 0.0, 94, &dense);
  const Tensor t = from_vector<int64_t>({1, 2}, {2}, Device::cuda());
  const Tensor count = device_count(t, 100);
  Outputs o = empty_outputs(logits);
  auto* shifted = static_cast<float*>(o.dlogits.raw_data()) + 1;
  const std::string msg = testing::error_message([&] {
    cuda::cross_entropy_rows_backward(gpu(), params_of(logits, t, o.lse, 100), o.row_loss.raw_data(), shifted,
                                      count.data<int64_t>());
  });
  EXPECT_NE(msg.find("[cross_entropy] the fused loss and gradient need logits and dlogits at the same offset "
                     "modulo 16 bytes, got 0 and 4"),
            std::string::npos)
      << msg;
#endif
}

#ifdef LONGNET_WITH_CUDA
// A loss and the gradients of x and w it gives.
struct LossAndGrads {
  Tensor loss, dx, dw;
};

LossAndGrads head(const Tensor& x, const Tensor& w, const Tensor& t, int64_t chunk) {
  const Tensor xl = x.clone().requires_grad_(true), wl = w.clone().requires_grad_(true);
  LossAndGrads r;
  r.loss = linear_cross_entropy(xl, wl, t, kIgnore, chunk);
  r.loss.backward();
  r.dx = xl.grad();
  r.dw = wl.grad();
  return r;
}

double max_abs(const Tensor& t) {
  double m = 0.0;
  for (const double v : t.to_vector<double>()) m = std::max(m, std::abs(v));
  return m;
}

// Whether linear_cross_entropy takes the fused path for this head on the GPU.
bool takes_fused_path(DType dtype, int64_t classes) {
  return classes <= cuda::cross_entropy_fused_classes(gpu(), dtype, DType::I64);
}

struct HeadCase {
  DType dtype;
  int64_t rows, dim, classes, chunk;
};

// linear_cross_entropy on the GPU against the CPU's from the same dtype-rounded inputs (in f32 on
// the CPU, in f64 for f64), every 9th target ignored; chunks that leave a short last one.
void expect_head_matches_the_cpu(const HeadCase& c) {
  Generator g(95);
  const Tensor x = randn({c.rows, c.dim}, DType::F32, Device::cpu(), &g).to(c.dtype);
  const Tensor w = mul(randn({c.classes, c.dim}, DType::F32, Device::cpu(), &g), 1.0 / std::sqrt(double(c.dim)))
                       .to(c.dtype);
  std::vector<int64_t> tv = randint(0, c.classes, {c.rows}, DType::I64, Device::cpu(), &g).to_vector<int64_t>();
  for (size_t i = 0; i < tv.size(); i += 9) tv[i] = kIgnore;
  const Tensor t = from_vector(tv, {c.rows});
  const DType ref_dtype = c.dtype == DType::F64 ? DType::F64 : DType::F32;
  const LossAndGrads want = head(x.to(ref_dtype), w.to(ref_dtype), t, c.chunk);
  const Device gpu = Device::cuda();
  const LossAndGrads got = head(x.to(gpu), w.to(gpu), t.to(gpu), c.chunk);
  const double tol = c.dtype == DType::F64 ? 1e-10 : c.dtype == DType::F32 ? 1e-4 : 2e-2;
  const auto host = [&](const Tensor& v) { return v.to(Device::cpu()).to(ref_dtype); };
  EXPECT_NEAR(got.loss.item(), want.loss.item(), tol * 0.1 * std::abs(want.loss.item()));
  EXPECT_EQ(got.dx.dtype(), c.dtype);
  EXPECT_EQ(got.dw.shape(), w.shape());
  EXPECT_TRUE(all_close(host(got.dx), want.dx, tol * max_abs(want.dx), 0.0));
  EXPECT_TRUE(all_close(host(got.dw), want.dw, tol * max_abs(want.dw), 0.0));
}
#endif

// The fused path: the presets' 50257 classes (padded to 50264) in bf16, a small odd vocabulary in
// f16 and f64. The fallback: one class more than the fused capacity, in f32 and in f64.
TEST(CrossEntropyFused, LinearCrossEntropyOnBothPathsMatchesTheCpu) {
  LN_REQUIRE_GPU();
#ifdef LONGNET_WITH_CUDA
  const std::vector<HeadCase> fused_cases = {{DType::BF16, 300, 64, 50257, 128},
                                             {DType::F16, 90, 32, 301, 40},
                                             {DType::F64, 50, 16, 97, 20}};
  const std::vector<HeadCase> fallback_cases = {
      {DType::F32, 96, 32, cuda::cross_entropy_fused_classes(gpu(), DType::F32, DType::I64) + 1, 40},
      {DType::F64, 24, 16, cuda::cross_entropy_fused_classes(gpu(), DType::F64, DType::I64) + 1, 10}};
  for (const bool fused_path : {true, false}) {
    for (const HeadCase& c : fused_path ? fused_cases : fallback_cases) {
      SCOPED_TRACE(std::string(fused_path ? "fused " : "fallback ") + dtype_name(c.dtype) + " classes " +
                   std::to_string(c.classes));
      ASSERT_EQ(takes_fused_path(c.dtype, c.classes), fused_path);
      expect_head_matches_the_cpu(c);
    }
  }
#endif
}

// A bad target on either path: a NaN loss, NaN gradient rows of x where the target is bad, 0
// where it is ignored, finite elsewhere.
TEST(CrossEntropyFused, LinearCrossEntropyBadTargetGivesNaNOnBothPaths) {
  LN_REQUIRE_GPU();
#ifdef LONGNET_WITH_CUDA
  if (const char* v = std::getenv("LONGNET_CHECK_TARGETS"); v != nullptr && *v != '\0' && std::string(v) != "0") {
    GTEST_SKIP() << "LONGNET_CHECK_TARGETS is set: bad targets raise instead";
  }
  const Device device = Device::cuda();
  struct Case {
    DType dtype;
    int64_t classes;
    bool fused;
  };
  const int64_t fallback = cuda::cross_entropy_fused_classes(gpu(), DType::F32, DType::I64) + 1;
  for (const Case c : {Case{DType::F32, 10, true}, Case{DType::BF16, 50257, true}, Case{DType::F32, fallback, false}}) {
    const DType dtype = c.dtype;
    const int64_t classes = c.classes;
    SCOPED_TRACE(std::string(dtype_name(dtype)) + " classes " + std::to_string(classes));
    ASSERT_EQ(takes_fused_path(dtype, classes), c.fused);
    Generator g(96);
    const Tensor w = mul(randn({classes, 8}, DType::F32, Device::cpu(), &g), 0.3).to(dtype).to(device);
    const Tensor x = randn({6, 8}, DType::F32, Device::cpu(), &g).to(dtype).to(device).requires_grad_(true);
    const Tensor t = from_vector<int64_t>({1, kIgnore, 3, classes, 0, 2}, {6}, device);
    const Tensor loss = linear_cross_entropy(x, w, t, kIgnore, 4);
    EXPECT_TRUE(std::isnan(loss.item()));
    loss.backward();
    const std::vector<double> dx = x.grad().to(Device::cpu()).to_vector<double>();
    for (size_t r = 0; r < 6; ++r) {
      for (size_t j = 0; j < 8; ++j) {
        const double v = dx[r * 8 + j];
        if (r == 3) {
          EXPECT_TRUE(std::isnan(v)) << r << "," << j;
        } else if (r == 1) {
          EXPECT_EQ(v, 0.0) << r << "," << j;
        } else {
          EXPECT_TRUE(std::isfinite(v)) << r << "," << j;
        }
      }
    }
  }
#endif
}

}  // namespace
}  // namespace longnet
