// What autograd nodes keep for the backward (Node::saved_tensors), and the forward order they are
// recorded in: elementwise ops keep only what their gradient formulas read.
#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::leaf;

// The storages a node keeps, undefined entries dropped.
std::vector<const Storage*> kept(const Tensor& out) {
  std::vector<const Storage*> s;
  for (const Tensor& t : out.grad_fn()->saved_tensors()) {
    if (t.defined()) s.push_back(t.storage().get());
  }
  return s;
}

TEST(SavedTensors, AddAndSubKeepNoOperand) {
  const Tensor a = leaf({3, 4}, 1), b = leaf({4}, 2);
  EXPECT_TRUE(kept(add(a, b)).empty());
  EXPECT_TRUE(kept(sub(a, b)).empty());
  // The shapes alone still reduce a broadcast operand's gradient.
  sum(sub(a, b)).backward();
  EXPECT_TRUE(testing::all_close(b.grad(), full({4}, -3.0, DType::F64)));
}

TEST(SavedTensors, MulKeepsEachOperandForTheOthersGradient) {
  const Tensor x = leaf({2, 3}, 3), y = leaf({2, 3}, 4);
  const Tensor c = randn({2, 3}, DType::F64);  // a constant: needs no gradient
  EXPECT_EQ(kept(mul(x, c)), std::vector<const Storage*>{c.storage().get()});
  EXPECT_EQ(kept(mul(c, x)), std::vector<const Storage*>{c.storage().get()});
  EXPECT_EQ(kept(mul(x, y)), (std::vector<const Storage*>{x.storage().get(), y.storage().get()}));
  // x / c needs c alone; c / x needs both.
  EXPECT_EQ(kept(div(x, c)), std::vector<const Storage*>{c.storage().get()});
  EXPECT_EQ(kept(div(c, x)), (std::vector<const Storage*>{c.storage().get(), x.storage().get()}));
}

TEST(SavedTensors, UnaryOpsKeepWhatTheirDerivativeReads) {
  const Tensor x = leaf({5}, 5);
  const Tensor g = gelu(x), e = exp(x), s = mul(x, 2.0), n = neg(x);
  EXPECT_EQ(kept(g), std::vector<const Storage*>{x.storage().get()});
  EXPECT_EQ(kept(e), std::vector<const Storage*>{e.storage().get()});
  EXPECT_TRUE(kept(s).empty());
  EXPECT_TRUE(kept(n).empty());
  // With neither kept, the gradient is still the op's constant derivative.
  sum(add(s, n)).backward();
  EXPECT_TRUE(testing::all_close(x.grad(), full({5}, 1.0, DType::F64)));
}

TEST(SavedTensors, UnaryGradientsMatchFiniteDifferencesWithOneSideKept) {
  using Fn = std::vector<Tensor>;
  EXPECT_TRUE(testing::gradcheck([](const Fn& x) { return gelu(x[0].transpose(0, 1)); }, {leaf({3, 4}, 6)}));
  EXPECT_TRUE(testing::gradcheck([](const Fn& x) { return tanh(x[0].slice(1, 0, 4, 2)); }, {leaf({3, 4}, 7)}));
  EXPECT_TRUE(testing::gradcheck([](const Fn& x) { return add(mul(x[0], -3.0), 1.5); }, {leaf({3, 4}, 8)}));
}

TEST(SavedTensors, ReleasedAfterBackwardAndOrderedByRecording) {
  const Tensor x = leaf({4}, 9);
  const Tensor y = gelu(x);
  const Tensor z = mul(y, y);
  EXPECT_LT(y.grad_fn()->sequence_nr, z.grad_fn()->sequence_nr);
  const std::shared_ptr<autograd::Node> node = z.grad_fn();
  EXPECT_EQ(kept(z).size(), 2u);
  sum(z).backward();
  for (const Tensor& t : node->saved_tensors()) EXPECT_FALSE(t.defined());
}

// The loss gradient over h (rows, dim) of cross_entropy(h @ w, targets); with `hold`, the caller
// keeps the logits alive through the backward. `peak` receives the bytes the backward added at
// most over what the forward left.
Tensor loss_grad(const Tensor& h, const Tensor& w, const Tensor& targets, bool hold, bool retain, int64_t* peak) {
  const Device device = h.device();
  const Tensor x = h.detach().requires_grad_(true);
  Tensor held, loss;
  {
    const Tensor logits = matmul(x, w);
    if (hold) held = logits;
    loss = cross_entropy(logits, targets);
  }
  const int64_t before = memory_stats(device).current_bytes;
  reset_peak_memory(device);
  loss.backward(Tensor(), retain);
  *peak = memory_stats(device).peak_bytes - before;
  if (retain) {  // a retained graph must still hold the logits the first backward read
    const Tensor first = x.grad().clone();
    loss.backward();
    EXPECT_TRUE(testing::all_close(x.grad().to(DType::F32), mul(first, 2.0).to(DType::F32), 0.0, 0.0));
    return first;
  }
  return x.grad();
}

// Free, held and retained logits give the same gradient; only the free ones are overwritten.
void check_in_place_loss_gradient(Device device, DType dtype) {
  const int64_t rows = 64, dim = 8, classes = 512;
  const Tensor h = randn({rows, dim}, DType::F32).to(dtype).to(device);
  const Tensor w = randn({dim, classes}, DType::F32).to(dtype).to(device);
  const Tensor targets = randint(0, classes, {rows}, DType::I64).to(device);
  int64_t peak_free = 0, peak_held = 0, peak_retained = 0;
  const Tensor g_free = loss_grad(h, w, targets, false, false, &peak_free).to(DType::F32);
  const Tensor g_held = loss_grad(h, w, targets, true, false, &peak_held).to(DType::F32);
  const Tensor g_retained = loss_grad(h, w, targets, false, true, &peak_retained).to(DType::F32);
  EXPECT_TRUE(testing::all_close(g_free, g_held, 0.0, 0.0));
  EXPECT_TRUE(testing::all_close(g_free, g_retained, 0.0, 0.0));
  // Held or retained logits get a gradient buffer of their own: one (rows, classes) block more.
  const int64_t block = rows * classes * static_cast<int64_t>(dtype_size(dtype));
  EXPECT_GE(peak_held - peak_free, block);
  EXPECT_GE(peak_retained - peak_free, block);
}

TEST(SavedTensors, CrossEntropyGradientTakesTheExpiringLogitsPlace) {
  check_in_place_loss_gradient(Device::cpu(), DType::F32);
}

TEST(SavedTensors, CrossEntropyGradientTakesTheExpiringLogitsPlaceOnGpu) {
  LN_REQUIRE_GPU();
  check_in_place_loss_gradient(Device::cuda(), DType::BF16);
  check_in_place_loss_gradient(Device::cuda(), DType::F32);
}

}  // namespace
}  // namespace longnet
