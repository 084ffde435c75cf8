// CPU-versus-CUDA parity of the elementwise, reduction, view and copy ops, forward and backward,
// in f32 and bf16, on contiguous and non-contiguous inputs of sizes that are not multiples of the
// block size.
#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace longnet {
namespace {

using testing::cpu_cuda_parity;

Tensor input(const Shape& shape, uint64_t seed, double lo = -2.0, double hi = 2.0) {
  Generator g(seed);
  NoGradGuard ng;
  return add(mul(rand(shape, DType::F32, Device::cpu(), &g), hi - lo), lo);
}

struct UnaryCase {
  const char* name;
  std::function<Tensor(const Tensor&)> fn;
  double lo, hi;
};

std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, -2, 2},
      {"exp", [](const Tensor& x) { return exp(x); }, -2, 2},
      {"log", [](const Tensor& x) { return log(x); }, 0.5, 3},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.5, 3},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, 0.5, 3},
      {"tanh", [](const Tensor& x) { return tanh(x); }, -2, 2},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -2, 2},
      {"relu", [](const Tensor& x) { return relu(x); }, -2, 2},
      {"gelu", [](const Tensor& x) { return gelu(x); }, -2, 2},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, -2, 2},
      {"silu", [](const Tensor& x) { return silu(x); }, -2, 2},
      {"abs", [](const Tensor& x) { return abs(x); }, -2, 2},
      {"pow", [](const Tensor& x) { return pow(x, 2.5); }, 0.5, 2},
      {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); }, -2, 2},
      {"add_scalar", [](const Tensor& x) { return add(x, 0.25); }, -2, 2},
      {"mul_scalar", [](const Tensor& x) { return mul(x, -1.5); }, -2, 2},
  };
}

TEST(CudaParity, UnaryOps) {
  LN_REQUIRE_GPU();
  for (const UnaryCase& c : unary_cases()) {
    for (DType dt : {DType::F32, DType::BF16}) {
      for (bool nc : {false, true}) {
        const Tensor x = input({37, 129}, 1, c.lo, c.hi);
        EXPECT_TRUE(cpu_cuda_parity([&](const std::vector<Tensor>& a) { return c.fn(a[0]); }, {x}, dt,
                                    true, nc))
            << c.name << " " << dtype_name(dt) << (nc ? " non-contiguous" : "");
      }
    }
  }
}

TEST(CudaParity, LargeContiguousUnaryTakesPackedPath) {
  LN_REQUIRE_GPU();
  const Tensor x = input({1 << 20 | 3}, 2);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return gelu(a[0]); }, {x}, dt))
        << dtype_name(dt);
  }
}

// The fused backward on the packed path (sizes with a tail that is not a whole 16-byte pack) and
// on the strided path for a view that starts off 16-byte alignment; ops whose derivative reads
// x, y = f(x) or nothing.
TEST(CudaParity, UnaryBackwardPackedTailsAndUnalignedViews) {
  LN_REQUIRE_GPU();
  const int64_t n = int64_t{1} << 16 | 5;
  for (const UnaryCase& c : unary_cases()) {
    const Tensor x = input({n}, 13, c.lo, c.hi);
    for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
      EXPECT_TRUE(cpu_cuda_parity([&](const std::vector<Tensor>& a) { return c.fn(a[0]); }, {x}, dt))
          << c.name << " " << dtype_name(dt);
      EXPECT_TRUE(cpu_cuda_parity([&](const std::vector<Tensor>& a) { return c.fn(a[0].narrow(0, 1, n - 1)); },
                                  {x}, dt))
          << c.name << " " << dtype_name(dt) << " unaligned";
    }
  }
}

// The 125M model's FFN activation: GELU's backward on (32768, 3072) on the GPU, rows compared with
// the CPU backward of the same rows.
TEST(CudaParity, LargeGeluBackwardMatchesCpuRows) {
  LN_REQUIRE_GPU();
  const Shape shape = {32768, 3072};
  for (DType dt : {DType::BF16, DType::F32}) {
    Generator g(14);
    const Tensor x = randn(shape, DType::F32, Device::cuda(0), &g).to(dt).requires_grad_(true);
    const Tensor dy = randn(shape, DType::F32, Device::cuda(0), &g).to(dt);
    const Tensor y = gelu(x);
    Tensor dx;
    {
      NoGradGuard no_grad;
      dx = y.grad_fn()->apply(std::vector<Tensor>{dy})[0];
    }
    ASSERT_EQ(dx.dtype(), dt);
    for (int64_t row : {int64_t{0}, int64_t{1}, int64_t{12345}, shape[0] - 1}) {
      const Tensor xr = x.detach().narrow(0, row, 1).to(Device::cpu()).requires_grad_(true);
      const Tensor dyr = dy.narrow(0, row, 1).to(Device::cpu());
      const Tensor yr = gelu(xr);  // recorded: the node is what the reference runs
      ASSERT_NE(yr.grad_fn(), nullptr);
      NoGradGuard no_grad;
      const Tensor want = yr.grad_fn()->apply(std::vector<Tensor>{dyr})[0];
      const testing::ParityTolerance tol = testing::parity_tolerance(dt);
      EXPECT_TRUE(testing::all_close(dx.narrow(0, row, 1).to(Device::cpu()).to(DType::F64), want.to(DType::F64),
                                     tol.atol, tol.rtol))
          << dtype_name(dt) << " row " << row;
    }
  }
}

// sum_to over every pattern the kernels distinguish: leading dims (vectorised rows, odd widths,
// chunked columns), middle dims, more outer slices than one grid dimension holds, dims that are no
// single run (permuted copy), a scalar; then the 125M model's bias-gradient shape.
TEST(CudaParity, SumToEveryLayout) {
  LN_REQUIRE_GPU();
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{1, 4099, 771}, {771}}, {{2, 4096, 768}, {768}}, {{5, 33, 129}, {5, 1, 129}}, {{70000, 3, 4}, {70000, 1, 4}},
      {{3, 7, 1, 5}, {7, 1, 1}}, {{3, 1, 7}, {}},       {{1, 32768, 768}, {768}}};
  for (const auto& [from, to] : cases) {
    const Tensor x = input(from, 15);
    for (DType dt : {DType::F32, DType::BF16}) {
      EXPECT_TRUE(cpu_cuda_parity([&to](const std::vector<Tensor>& a) { return sum_to(a[0], to); }, {x}, dt))
          << shape_str(from) << " -> " << shape_str(to) << " " << dtype_name(dt);
    }
  }
  // Integers sum exactly, through the two-pass path (i64 partials) as well.
  const Tensor xi = arange(0, 300 * 1000, 1, DType::I64).reshape({300, 1000});
  EXPECT_EQ(sum(xi.to(Device::cuda(0)), {0}).to(Device::cpu()).to_vector<int64_t>(), sum(xi, {0}).to_vector<int64_t>());
  const Tensor x32 = arange(0, 4000 * 24, 1, DType::I32).reshape({4000, 24});
  EXPECT_EQ(sum(x32.to(Device::cuda(0)), {0}).to(Device::cpu()).to_vector<int32_t>(), sum(x32, {0}).to_vector<int32_t>());
}

TEST(CudaParity, BinaryOpsWithBroadcasting) {
  LN_REQUIRE_GPU();
  const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&, const Tensor&)>>> ops = {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, add(abs(b), 0.5)); }},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); }},
  };
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{33, 65}, {33, 65}}, {{33, 65}, {65}}, {{33, 1}, {1, 65}}, {{5, 33, 65}, {33, 1}}, {{33, 65}, {}}};
  for (const auto& [name, op] : ops) {
    for (const auto& [sa, sb] : shapes) {
      for (DType dt : {DType::F32, DType::BF16}) {
        EXPECT_TRUE(cpu_cuda_parity([&](const std::vector<Tensor>& a) { return op(a[0], a[1]); },
                                    {input(sa, 3), input(sb, 4)}, dt))
            << name << " " << shape_str(sa) << " " << shape_str(sb) << " " << dtype_name(dt);
      }
    }
    EXPECT_TRUE(cpu_cuda_parity([&](const std::vector<Tensor>& a) { return op(a[0], a[1]); },
                                {input({40, 70}, 5), input({40, 70}, 6)}, DType::F32, true, true))
        << name << " non-contiguous";
  }
}

TEST(CudaParity, CompareWhereMaskedFill) {
  LN_REQUIRE_GPU();
  const Tensor a = input({31, 47}, 7), b = input({47}, 8);
  for (DType dt : {DType::F32, DType::BF16}) {
    EXPECT_TRUE(cpu_cuda_parity(
        [](const std::vector<Tensor>& x) {
          return where(compare(x[0], x[1], CompareOp::Gt), x[0], mul(x[1], 2.0));
        },
        {a, b}, dt));
    EXPECT_TRUE(cpu_cuda_parity(
        [](const std::vector<Tensor>& x) { return masked_fill(x[0], compare(x[1], 0.0, CompareOp::Lt), -1e4); },
        {a, b}, dt));
  }
}

TEST(CudaParity, Reductions) {
  LN_REQUIRE_GPU();
  const Tensor x = input({7, 33, 129}, 9);
  using Dims = std::vector<int64_t>;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool nc : {false, true}) {
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return sum(a[0], Dims{-1}); }, {x}, dt, true, nc));
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return sum(a[0], Dims{0, 2}, true); }, {x}, dt, true, nc));
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return mean(a[0], Dims{1}); }, {x}, dt, true, nc));
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return max(a[0], 1); }, {x}, dt, true, nc));
      EXPECT_TRUE(cpu_cuda_parity([](const std::vector<Tensor>& a) { return logsumexp(a[0], Dims{-1}); }, {x}, dt, true, nc));
    }
  }
  const Tensor idx_cpu = argmax(x, 2);
  const Tensor idx_gpu = argmax(x.to(Device::cuda(0)), 2).to(Device::cpu());
  EXPECT_EQ(idx_cpu.to_vector<int64_t>(), idx_gpu.to_vector<int64_t>());
}

TEST(CudaParity, ViewsCopiesAndCasts) {
  LN_REQUIRE_GPU();
  const Tensor x = input({6, 35, 17}, 10);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    EXPECT_TRUE(cpu_cuda_parity(
        [](const std::vector<Tensor>& a) {
          return mul(a[0].permute({2, 0, 1}).slice(1, 1, 6, 2).contiguous(), 3.0);
        },
        {x}, dt));
    EXPECT_TRUE(cpu_cuda_parity(
        [](const std::vector<Tensor>& a) { return a[0].slice(2, 0, 1).expand({6, 35, 9}).to(DType::F32); },
        {x}, dt));
  }
  // Host <-> device round trips of every dtype, including strided sources.
  for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8,
                   DType::Bool}) {
    const Tensor src = x.to(dt).transpose(0, 2);
    const Tensor back = src.to(Device::cuda(0)).to(Device::cpu());
    EXPECT_EQ(back.to(DType::F64).to_vector<double>(), src.to(DType::F64).to_vector<double>()) << dtype_name(dt);
  }
}

TEST(CudaParity, InPlaceUpdatesAndFactories) {
  LN_REQUIRE_GPU();
  const Tensor a = input({129, 33}, 11), b = input({33}, 12);
  Tensor ga = a.to(Device::cuda(0)), gb = b.to(Device::cuda(0));
  Tensor ca = a.clone();
  add_(ca, b, -0.5);
  add_(ga, gb, -0.5);
  mul_(ca, 1.25);
  mul_(ga, 1.25);
  EXPECT_TRUE(testing::all_close(ga.to(Device::cpu()), ca));
  Generator g1(5), g2(5);
  EXPECT_EQ(randn({1000}, DType::F32, Device::cuda(0), &g1).to(Device::cpu()).to_vector<float>(),
            randn({1000}, DType::F32, Device::cpu(), &g2).to_vector<float>());
  EXPECT_EQ(zeros({3, 5}, DType::BF16, Device::cuda(0)).to(DType::F32).to(Device::cpu()).to_vector<float>(),
            std::vector<float>(15, 0.0f));
}

}  // namespace
}  // namespace longnet

namespace longnet {
namespace {

TEST(CudaParity, MatmulAndLinear) {
  LN_REQUIRE_GPU();
  using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
  const std::vector<std::tuple<const char*, Fn, std::vector<Shape>>> cases = {
      {"2d", [](const std::vector<Tensor>& a) { return matmul(a[0], a[1]); }, {{37, 45}, {45, 29}}},
      {"batched", [](const std::vector<Tensor>& a) { return matmul(a[0], a[1]); }, {{3, 33, 64}, {3, 64, 40}}},
      {"broadcast", [](const std::vector<Tensor>& a) { return matmul(a[0], a[1]); }, {{2, 3, 17, 32}, {32, 24}}},
      {"transposed", [](const std::vector<Tensor>& a) { return matmul(a[0].transpose(0, 1), a[1].transpose(0, 1)); },
       {{48, 31}, {40, 48}}},
      {"vector", [](const std::vector<Tensor>& a) { return matmul(a[0], a[1]); }, {{64}, {64, 24}}},
      {"linear", [](const std::vector<Tensor>& a) { return linear(a[0], a[1], a[2]); }, {{4, 9, 64}, {96, 64}, {96}}},
  };
  for (const auto& [name, fn, shapes] : cases) {
    std::vector<Tensor> in;
    for (size_t i = 0; i < shapes.size(); ++i) in.push_back(input(shapes[i], 20 + i, -1, 1));
    for (DType dt : {DType::F32, DType::BF16}) {
      EXPECT_TRUE(cpu_cuda_parity(fn, in, dt)) << name << " " << dtype_name(dt);
    }
  }
}

}  // namespace
}  // namespace longnet
