#include "framework/ops/rotary.h"

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/rotary.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/rotary.h"
#endif
#include "framework/ops/common.h"
#include "framework/ops/copy.h"

namespace longnet {
namespace {

Tensor rotate(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse);

// The gradient of a rotation is the rotation by the opposite angles, with the same tables.
class RotaryBackward final : public autograd::Node {
 public:
  RotaryBackward(Tensor cos, Tensor sin, bool inverse)
      : cos_(std::move(cos)), sin_(std::move(sin)), inverse_(inverse) {}
  std::string name() const override { return "RotatePairsBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {rotate(g[0], cos_, sin_, !inverse_)}; }
  std::vector<Tensor> saved_tensors() const override { return {cos_, sin_}; }
  void release_saved() override {
    cos_ = Tensor();
    sin_ = Tensor();
  }

 private:
  Tensor cos_, sin_;
  bool inverse_;
};

void check_table(const char* what, const Tensor& t, const Tensor& x, DType want) {
  const int64_t n = x.size(1), half = x.size(3) / 2;
  LN_CHECK(t.defined(), "[rotate_pairs] ", what, " is undefined");
  LN_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) == half, "[rotate_pairs] ", what, " must be (N, D/2) = (", n,
           ", ", half, ") for x ", shape_str(x.shape()), ", got ", shape_str(t.shape()));
  LN_CHECK(t.dtype() == want, "[rotate_pairs] ", what, " must be ", dtype_name(want), " for ", dtype_name(x.dtype()),
           " x, got ", dtype_name(t.dtype()));
}

Tensor rotate(const Tensor& x, const Tensor& cos, const Tensor& sin, bool inverse) {
  const ProfileScope scope(inverse ? "rotate_pairs_backward" : "rotate_pairs");
  const Device device = ops::common_device("rotate_pairs", {x, cos, sin});
  ops::require_float("rotate_pairs", x);
  LN_CHECK(x.dim() == 4 && x.size(3) % 2 == 0, "[rotate_pairs] expects x (B, N, H, D) with D even, got ",
           shape_str(x.shape()));
  const DType table_dtype = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
  check_table("cos", cos, x, table_dtype);
  check_table("sin", sin, x, table_dtype);
  LN_CHECK(!autograd::needs_grad({cos, sin}),
           "[rotate_pairs] cos and sin are constants (no gradient flows to them): pass them detached");
  Tensor y;
  {
    NoGradGuard no_grad;
    const Tensor xk = ops::kernel_input(x).contiguous();
    const Tensor c = cos.contiguous(), s = sin.contiguous();
    Tensor out = Tensor::empty(xk.shape(), xk.dtype(), device);
    const cpu::RotaryParams p{xk.raw_data(), c.raw_data(), s.raw_data(), out.raw_data(), xk.dtype(),
                              x.size(0),     x.size(1),    x.size(2),    x.size(3) / 2,  inverse};
    if (out.numel() > 0) LN_ON_DEVICE(device, cpu::rotate_pairs(p), cuda::rotate_pairs(device.index, p));
    y = cast(out, x.dtype());
  }
  if (autograd::needs_grad({x})) {
    autograd::record(std::make_shared<RotaryBackward>(cos.detach(), sin.detach(), inverse), {x}, {y});
  }
  return y;
}

}  // namespace

Tensor rotate_pairs(const Tensor& x, const Tensor& cos, const Tensor& sin) { return rotate(x, cos, sin, false); }

}  // namespace longnet
