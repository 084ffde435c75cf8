// Error messages: every failure is a longnet::Error whose message starts with the op name in
// brackets and shows the shapes (shape_str prints a 1-D shape as "(4)", a scalar as "()").
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/support/gpu.h"

namespace longnet {
namespace {

struct ErrorCase {
  std::string name;
  std::function<void()> fn;
  std::vector<std::string> parts;  // the message starts with parts[0] and contains the rest
};

void expect_errors(const std::vector<ErrorCase>& cases) {
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    try {
      c.fn();
      ADD_FAILURE() << "no longnet::Error thrown";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(c.parts[0], 0), 0u) << msg;
      for (const std::string& p : c.parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' in: " << msg;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw a non-longnet exception: " << e.what();
    }
  }
}

TEST(Errors, BroadcastFailuresNameTheOpAndBothShapes) {
  const Tensor a = zeros({2, 3}), b = zeros({4});
  expect_errors({
      {"add", [&] { add(a, b); }, {"[add]", "(2, 3)", "(4)"}},
      {"sub", [&] { sub(b, a); }, {"[sub]", "(4)", "(2, 3)"}},
      {"mul", [&] { mul(a, zeros({3, 3})); }, {"[mul]", "(2, 3)", "(3, 3)"}},
      {"div", [&] { div(a, b); }, {"[div]", "(2, 3)", "(4)"}},
      {"maximum", [&] { maximum(a, b); }, {"[maximum]", "(2, 3)", "(4)"}},
      {"minimum", [&] { minimum(a, b); }, {"[minimum]", "(2, 3)", "(4)"}},
      {"operator+", [&] { (void)(a + b); }, {"[add]", "(2, 3)", "(4)"}},
      {"compare", [&] { compare(a, b, CompareOp::Lt); }, {"[compare]", "(2, 3)", "(4)"}},
      {"where", [&] { where(zeros({2, 3}, DType::Bool), a, b); }, {"[where]", "(2, 3)", "(4)"}},
      {"masked_fill", [&] { masked_fill(b, zeros({2, 4}, DType::Bool), 0.0); }, {"[masked_fill]", "(2, 4)", "(4)"}},
      {"add_", [&] { add_(b, a); }, {"[add_]", "(2, 3)", "(4)"}},
      {"copy_", [&] { copy_(a, b); }, {"[copy_]", "(4)", "(2, 3)"}},
  });
}

TEST(Errors, DtypeMismatchesNameTheOpAndDtypes) {
  const Tensor f = zeros({2, 3}), d = zeros({2, 3}, DType::F64), i = zeros({2}, DType::I64);
  expect_errors({
      {"mul", [&] { mul(f, d); }, {"[mul] dtype mismatch", "f32", "f64", "(2, 3)"}},
      {"add", [&] { add(f, zeros({2, 3}, DType::BF16)); }, {"[add] dtype mismatch", "bf16"}},
      {"where", [&] { where(zeros({2, 3}, DType::Bool), f, d); }, {"[where] dtype mismatch"}},
      {"where condition", [&] { where(f, f, f); }, {"[where] condition must be bool or u8", "f32"}},
      {"add_", [&] { add_(f, d); }, {"[add_] dtype mismatch"}},
      {"unary on integers", [&] { sqrt(i); }, {"[sqrt] expected a float tensor", "i64", "(2)"}},
      {"scalar mul on integers", [&] { mul(i, 2.0); }, {"[mul]", "i64"}},
      {"bool arithmetic", [&] { add(zeros({2}, DType::Bool), zeros({2}, DType::Bool)); }, {"[add]", "bool"}},
      {"mean of integers", [&] { mean(i); }, {"[mean]", "i64"}},
      {"randn integer", [] { randn({2}, DType::I32); }, {"[randn]", "i32"}},
      {"data<T>", [&] { f.data<double>(); }, {"[data]", "f64", "f32"}},
      {"requires_grad_", [&] { zeros({2}, DType::I32).requires_grad_(); }, {"[requires_grad_]", "i32"}},
      {"dtype name", [] { dtype_from_name("float7"); }, {"[dtype]", "float7"}},
  });
}

TEST(Errors, ShapeAndValueErrors) {
  const Tensor x = zeros({2, 3});
  expect_errors({
      {"item", [&] { x.item(); }, {"[item]", "(2, 3)"}},
      {"reshape", [&] { x.reshape({4, 2}); }, {"[reshape]", "(2, 3)", "(4, 2)"}},
      {"reshape -1", [&] { x.reshape({-1, 4}); }, {"[reshape]", "(2, 3)", "(-1, 4)"}},
      {"view", [&] { x.view({7}); }, {"[view]", "(2, 3)", "(7)"}},
      {"view layout", [&] { x.transpose(0, 1).view({6}); }, {"[view]", "(3, 2)", "(6)", "reshape"}},
      {"permute", [&] { x.permute({0}); }, {"[permute]", "(2, 3)"}},
      {"narrow", [&] { x.narrow(1, 2, 2); }, {"[narrow]", "(2, 3)"}},
      {"expand", [&] { x.expand({4, 3}); }, {"[expand]", "(2, 3)", "(4, 3)"}},
      {"squeeze", [&] { x.squeeze(0); }, {"[squeeze]", "(2, 3)"}},
      {"sum dim", [&] { sum(x, {2}); }, {"[sum] dim 2 out of range"}},
      {"max dim", [&] { max(x, -3); }, {"[max] dim -3 out of range"}},
      {"transpose dim", [&] { x.transpose(0, 5); }, {"[transpose] dim 5"}},
      {"empty max", [] { max(zeros({2, 0}), 1); }, {"[max] empty dim", "(2, 0)"}},
      {"clamp bounds", [&] { clamp(x, 1.0, 0.0); }, {"[clamp]"}},
      {"from_vector", [] { from_vector<float>({1, 2, 3}, {2, 2}); }, {"[from_vector]", "(2, 2)"}},
      {"negative size", [] { Tensor::empty({2, -1}); }, {"[empty]", "(2, -1)"}},
      {"arange step", [] { arange(0, 1, 0); }, {"[arange]"}},
      {"backward non-scalar", [] { exp(zeros({2, 3}).requires_grad_()).backward(); }, {"[backward]", "(2, 3)"}},
      {"backward no grad", [] { sum(zeros({4})).backward(); }, {"[backward]", "()", "does not require grad"}},
      {"backward grad dtype", [] { exp(zeros({2}).requires_grad_()).backward(ones({2}, DType::F64)); },
       {"[backward] gradient dtype f64", "f32", "(2)"}},
      {"set_grad", [&] { Tensor(x).set_grad(zeros({3})); }, {"[set_grad]", "(3)", "(2, 3)"}},
  });
}

TEST(Errors, UndefinedTensors) {
  const Tensor u, x = zeros({2});
  expect_errors({
      {"add", [&] { add(u, x); }, {"[add] undefined tensor"}},
      {"mul", [&] { mul(x, u); }, {"[mul] undefined tensor"}},
      {"exp", [&] { exp(u); }, {"[exp] undefined tensor"}},
      {"copy_", [&] { copy_(x, u); }, {"[copy_] undefined tensor"}},
      {"shape", [&] { (void)u.shape(); }, {"[tensor] use of an undefined tensor"}},
      {"dtype", [&] { (void)u.dtype(); }, {"[tensor] use of an undefined tensor"}},
      {"device", [&] { (void)u.device(); }, {"[tensor] use of an undefined tensor"}},
      {"reshape", [&] { u.reshape({2}); }, {"[tensor] use of an undefined tensor"}},
  });
  EXPECT_FALSE(u.defined());
  EXPECT_FALSE(u.requires_grad());
  EXPECT_FALSE(u.grad().defined());
  EXPECT_EQ(u.to_string(), "tensor(undefined)");
}

TEST(Errors, Devices) {
  expect_errors({{"device name", [] { device_from_string("gpu:1"); }, {"[device]", "gpu:1"}}});
  if (testing::gpu_available()) {
    const Tensor c = zeros({2, 3}), g = zeros({2, 3}, DType::F32, Device::cuda(0));
    expect_errors({
        {"add", [&] { add(c, g); }, {"[add] tensors on different devices", "cpu", "cuda:0"}},
        {"where", [&] { where(zeros({2, 3}, DType::Bool), c, g); }, {"[where] tensors on different devices"}},
    });
  } else {
    // Without a GPU backend, a CUDA tensor cannot even be allocated.
#ifndef LONGNET_WITH_CUDA
    expect_errors({{"alloc", [] { zeros({2}, DType::F32, Device::cuda(0)); }, {"[alloc] cuda:0", "no CUDA backend"}}});
#endif
  }
}

}  // namespace
}  // namespace longnet
