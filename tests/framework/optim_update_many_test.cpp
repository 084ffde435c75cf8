// Batched optimizer updates (adamw_update_many_, sgd_update_many_) against the per-tensor ops on
// the same operands: bit-identical on the CPU and on the GPU (where the contiguous tensors go
// through one launch per batch of 64), and within rounding of the CPU from the GPU. The batches
// mix sizes that leave tails after the 16-byte packs, tensors that fill several blocks, empty
// tensors, bf16 / f16 / f64 operands, transposed and misaligned ones, and hold more tensors than
// one launch takes. Errors: list lengths, a bad operand anywhere (nothing is updated), devices.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "framework/ops/optim_update.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

enum class Layout { Contiguous, Misaligned, Transposed };

// One parameter of a test batch.
struct Spec {
  Shape shape;
  DType param_dtype = DType::F32;
  DType grad_dtype = DType::F32;
  Layout layout = Layout::Contiguous;
};

// `count` parameters cycling through sizes, dtypes and layouts.
std::vector<Spec> specs(size_t count) {
  const std::vector<Shape> shapes = {{1}, {3}, {4}, {5, 7}, {33}, {0}, {257}, {8, 128}, {1023}, {70001}, {31, 33}, {2}};
  std::vector<Spec> out;
  for (size_t i = 0; i < count; ++i) {
    Spec s;
    s.shape = shapes[i % shapes.size()];
    if (i % 11 == 4) {
      s.param_dtype = s.grad_dtype = DType::F64;
    } else {
      s.grad_dtype = i % 3 == 1 ? DType::BF16 : i % 5 == 2 ? DType::F16 : DType::F32;
    }
    if (s.shape.size() == 2 && i % 2 == 1) s.layout = Layout::Transposed;
    if (i % 13 == 6) s.layout = Layout::Misaligned;
    out.push_back(s);
  }
  return out;
}

// A tensor of `shape` and `dtype` on `device`, laid out as `layout`, holding `values`.
Tensor place(const Tensor& values, DType dtype, Device device, Layout layout) {
  const Shape& shape = values.shape();
  Tensor t;
  if (layout == Layout::Transposed) {
    t = Tensor::empty({shape[1], shape[0]}, dtype, device).transpose(0, 1);
  } else if (layout == Layout::Misaligned) {
    t = Tensor::empty({values.numel() + 1}, dtype, device).narrow(0, 1, values.numel()).view(shape);
  } else {
    t = Tensor::empty(shape, dtype, device);
  }
  copy_(t, values);
  return t;
}

Tensor random_values(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  return mul(randn(shape, DType::F64, Device::cpu(), &g), scale);
}

// Parameters, optimizer states and a gradient per step, on one device.
struct Batch {
  std::vector<Tensor> params, grads, state0, state1;
};

Batch make_batch(const std::vector<Spec>& sp, Device device, bool two_states) {
  Batch b;
  for (size_t i = 0; i < sp.size(); ++i) {
    const Spec& s = sp[i];
    const uint64_t seed = 1000 * (i + 1);
    b.params.push_back(place(random_values(s.shape, seed), s.param_dtype, device, s.layout));
    b.state0.push_back(place(random_values(s.shape, seed + 1, 0.1), s.param_dtype, device, s.layout));
    if (two_states) b.state1.push_back(place(abs(random_values(s.shape, seed + 2, 0.01)), s.param_dtype, device, s.layout));
  }
  return b;
}

void set_step_grads(Batch& b, const std::vector<Spec>& sp, Device device, int step) {
  b.grads.clear();
  for (size_t i = 0; i < sp.size(); ++i) {
    const Spec& s = sp[i];
    b.grads.push_back(place(random_values(s.shape, 7919 * (i + 1) + static_cast<uint64_t>(step)), s.grad_dtype,
                            device, s.layout));
  }
}

std::vector<AdamWParams> adam_configs() {
  std::vector<AdamWParams> c(3);
  c[0].lr = 1e-2;  // no weight decay
  c[1].lr = 3e-3, c[1].weight_decay = 0.1, c[1].beta1 = 0.8, c[1].eps = 1e-6;
  c[2].lr = 1e-2, c[2].weight_decay = 0.05, c[2].l2_decay = true, c[2].maximize = true;
  return c;
}

std::vector<SgdParams> sgd_configs() {
  std::vector<SgdParams> c(3);
  c[0].lr = 0.05;  // no momentum: no buffers
  c[1].lr = 0.05, c[1].momentum = 0.9, c[1].nesterov = true, c[1].weight_decay = 0.01;
  c[2].lr = 0.1, c[2].momentum = 0.5, c[2].dampening = 0.3, c[2].maximize = true;
  return c;
}

// Three steps of config `h` on `b`, batched or tensor by tensor.
void run_adam(Batch& b, const std::vector<Spec>& sp, Device device, AdamWParams h, bool batched) {
  for (int step = 1; step <= 3; ++step) {
    set_step_grads(b, sp, device, step);
    h.step = step;
    if (batched) {
      adamw_update_many_(b.params, b.grads, b.state0, b.state1, h);
    } else {
      for (size_t i = 0; i < sp.size(); ++i) adamw_update_(b.params[i], b.grads[i], b.state0[i], b.state1[i], h);
    }
  }
}

void run_sgd(Batch& b, const std::vector<Spec>& sp, Device device, SgdParams h, bool batched) {
  const bool momentum = h.momentum != 0.0;
  for (int step = 1; step <= 3; ++step) {
    set_step_grads(b, sp, device, step);
    h.first_step = step == 1;
    if (batched) {
      sgd_update_many_(b.params, b.grads, momentum ? b.state0 : std::vector<Tensor>{}, h);
    } else {
      for (size_t i = 0; i < sp.size(); ++i) sgd_update_(b.params[i], b.grads[i], momentum ? b.state0[i] : Tensor(), h);
    }
  }
}

// Every parameter and state of `got` equal to `want` (atol 0: bit for bit), else within tolerance.
::testing::AssertionResult same(const Batch& got, const Batch& want, double atol, double rtol) {
  const auto compare = [&](const std::vector<Tensor>& a, const std::vector<Tensor>& b,
                           const char* what) -> ::testing::AssertionResult {
    for (size_t i = 0; i < a.size(); ++i) {
      const std::vector<double> x = a[i].to_vector<double>(), y = b[i].to_vector<double>();
      for (size_t j = 0; j < x.size(); ++j) {
        const bool ok = atol == 0.0 ? x[j] == y[j] : std::abs(x[j] - y[j]) <= atol + rtol * std::abs(y[j]);
        if (!ok) {
          return ::testing::AssertionFailure() << what << " " << i << " " << shape_str(a[i].shape()) << " element "
                                               << j << ": " << x[j] << " vs " << y[j];
        }
      }
    }
    return ::testing::AssertionSuccess();
  };
  for (auto r : {compare(got.params, want.params, "param"), compare(got.state0, want.state0, "state 0"),
                 compare(got.state1, want.state1, "state 1")}) {
    if (!r) return r;
  }
  return ::testing::AssertionSuccess();
}

TEST(OptimUpdateMany, AdamWEqualsThePerTensorOpOnTheCpu) {
  const std::vector<Spec> sp = specs(30);
  for (const AdamWParams& h : adam_configs()) {
    Batch batched = make_batch(sp, Device::cpu(), true), single = make_batch(sp, Device::cpu(), true);
    run_adam(batched, sp, Device::cpu(), h, true);
    run_adam(single, sp, Device::cpu(), h, false);
    EXPECT_TRUE(same(batched, single, 0.0, 0.0)) << "weight decay " << h.weight_decay;
    // The updates moved the parameters (the comparison is not between two untouched batches).
    EXPECT_NE(batched.params[0].item(), make_batch(sp, Device::cpu(), true).params[0].item());
  }
}

TEST(OptimUpdateMany, SgdEqualsThePerTensorOpOnTheCpu) {
  const std::vector<Spec> sp = specs(30);
  for (const SgdParams& h : sgd_configs()) {
    Batch batched = make_batch(sp, Device::cpu(), false), single = make_batch(sp, Device::cpu(), false);
    run_sgd(batched, sp, Device::cpu(), h, true);
    run_sgd(single, sp, Device::cpu(), h, false);
    EXPECT_TRUE(same(batched, single, 0.0, 0.0)) << "momentum " << h.momentum;
  }
}

TEST(OptimUpdateMany, EmptyBatchIsANoOp) {
  EXPECT_NO_THROW(adamw_update_many_({}, {}, {}, {}, AdamWParams{}));
  EXPECT_NO_THROW(sgd_update_many_({}, {}, {}, SgdParams{}));
}

TEST(OptimUpdateMany, ErrorsNameTheOpAndUpdateNothing) {
  const std::vector<Spec> sp = specs(3);
  Batch b = make_batch(sp, Device::cpu(), true);
  set_step_grads(b, sp, Device::cpu(), 1);
  const std::vector<double> before = b.params[0].to_vector<double>();

  std::string msg = testing::error_message(
      [&] { adamw_update_many_(b.params, b.grads, {b.state0.data(), 2}, b.state1, AdamWParams{}); });
  EXPECT_NE(msg.find("[adamw_update_many_] 3 parameters but 2 exp_avg tensors"), std::string::npos) << msg;

  // A bad state for the last parameter: found before the first is touched.
  std::vector<Tensor> bad = b.state1;
  bad[2] = zeros({6}, DType::F32, Device::cpu());
  msg = testing::error_message([&] { adamw_update_many_(b.params, b.grads, b.state0, bad, AdamWParams{}); });
  EXPECT_NE(msg.find("[adamw_update_many_] state f32 (6) does not match parameter f32 (4)"), std::string::npos) << msg;
  EXPECT_EQ(b.params[0].to_vector<double>(), before);

  AdamWParams h;
  h.step = 0;
  msg = testing::error_message([&] { adamw_update_many_(b.params, b.grads, b.state0, b.state1, h); });
  EXPECT_NE(msg.find("[adamw_update_many_] step counts from 1"), std::string::npos) << msg;
  EXPECT_EQ(b.params[0].to_vector<double>(), before);

  SgdParams s;
  s.momentum = 0.9;
  msg = testing::error_message([&] { sgd_update_many_(b.params, b.grads, {}, s); });
  EXPECT_NE(msg.find("[sgd_update_many_] 3 parameters but 0 momentum buffers"), std::string::npos) << msg;
  msg = testing::error_message([&] { sgd_update_many_(b.params, {b.grads.data(), 1}, {}, SgdParams{}); });
  EXPECT_NE(msg.find("[sgd_update_many_] 3 parameters but 1 gradients"), std::string::npos) << msg;
  EXPECT_EQ(b.params[0].to_vector<double>(), before);
}

// ---- GPU ----

// More tensors than one launch takes (64), so the batch spans several launches.
constexpr size_t kGpuTensors = 150;

TEST(OptimUpdateManyCuda, AdamWEqualsThePerTensorKernelAndTheCpu) {
  LN_REQUIRE_GPU();
  const std::vector<Spec> sp = specs(kGpuTensors);
  const Device gpu = Device::cuda(0);
  for (const AdamWParams& h : adam_configs()) {
    Batch batched = make_batch(sp, gpu, true), single = make_batch(sp, gpu, true), cpu = make_batch(sp, Device::cpu(), true);
    run_adam(batched, sp, gpu, h, true);
    run_adam(single, sp, gpu, h, false);
    run_adam(cpu, sp, Device::cpu(), h, false);
    EXPECT_TRUE(same(batched, single, 0.0, 0.0)) << "weight decay " << h.weight_decay << " l2 " << h.l2_decay;
    EXPECT_TRUE(same(batched, cpu, 1e-6, 1e-5)) << "weight decay " << h.weight_decay << " l2 " << h.l2_decay;
  }
}

TEST(OptimUpdateManyCuda, SgdEqualsThePerTensorKernelAndTheCpu) {
  LN_REQUIRE_GPU();
  const std::vector<Spec> sp = specs(kGpuTensors);
  const Device gpu = Device::cuda(0);
  for (const SgdParams& h : sgd_configs()) {
    Batch batched = make_batch(sp, gpu, false), single = make_batch(sp, gpu, false), cpu = make_batch(sp, Device::cpu(), false);
    run_sgd(batched, sp, gpu, h, true);
    run_sgd(single, sp, gpu, h, false);
    run_sgd(cpu, sp, Device::cpu(), h, false);
    EXPECT_TRUE(same(batched, single, 0.0, 0.0)) << "momentum " << h.momentum;
    EXPECT_TRUE(same(batched, cpu, 1e-6, 1e-5)) << "momentum " << h.momentum;
  }
}

TEST(OptimUpdateManyCuda, ABatchLivesOnOneDevice) {
  LN_REQUIRE_GPU();
  const std::vector<Spec> sp = specs(2);
  Batch b = make_batch(sp, Device::cuda(0), true);
  set_step_grads(b, sp, Device::cuda(0), 1);
  Batch c = make_batch(sp, Device::cpu(), true);
  set_step_grads(c, sp, Device::cpu(), 1);
  const std::vector<Tensor> params{b.params[0], c.params[1]}, grads{b.grads[0], c.grads[1]};
  const std::vector<Tensor> m{b.state0[0], c.state0[1]}, v{b.state1[0], c.state1[1]};
  const std::string msg = testing::error_message([&] { adamw_update_many_(params, grads, m, v, AdamWParams{}); });
  EXPECT_NE(msg.find("a batch lives on one device"), std::string::npos) << msg;
}

}  // namespace
}  // namespace longnet
