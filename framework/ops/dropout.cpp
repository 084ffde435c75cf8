#include "framework/ops/dropout.h"

#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/dropout.h"
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/dropout.h"
#endif

namespace longnet {
namespace {

// out = x * mask / (1 - p), returned in x's dtype; draws the mask first when `rng` is given.
// CPU kernels compute 16-bit floats in f32 after an upcast; the GPU kernel reads them directly.
Tensor apply_mask(const Tensor& x, const Tensor& mask, double p, const RngState* rng) {
  const Device dev = x.device();
  const Tensor xc = ops::kernel_input(x);
  Tensor out = Tensor::empty(x.shape(), xc.dtype(), dev);
  const cpu::DropoutParams params{x.shape(),
                                  {out.raw_data(), out.dtype(), out.strides().data()},
                                  {xc.raw_data(), xc.dtype(), xc.strides().data()},
                                  mask.data<uint8_t>(),
                                  rng != nullptr,
                                  p,
                                  rng ? rng->seed : 0,
                                  rng ? rng->offset : 0};
  if (dev.is_cuda()) {
#ifdef LONGNET_WITH_CUDA
    cuda::dropout(dev.index, params);
#endif
  } else {
    cpu::dropout(params);
  }
  return cast(out, x.dtype());
}

class DropoutBackward final : public autograd::Node {
 public:
  DropoutBackward(Tensor mask, double p) : mask_(std::move(mask)), p_(p) {}
  std::string name() const override { return "DropoutBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    return {apply_mask(g[0], mask_, p_, nullptr)};
  }
  std::vector<Tensor> saved_tensors() const override { return {mask_}; }
  void release_saved() override { mask_ = Tensor(); }

 private:
  Tensor mask_;  // u8, contiguous, 1 where kept
  double p_;
};

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen) {
  const ProfileScope scope("dropout");
  LN_CHECK(p >= 0.0 && p < 1.0, "[dropout] p must be in [0, 1), got ", p, " for input ",
           shape_str(x.shape()));
  if (!training || p == 0.0) return x;
  ops::require_float("dropout", x);
  Generator& g = gen ? *gen : default_generator();
  const RngState rng{g.state().seed, g.reserve(x.numel())};
  Tensor mask = Tensor::empty(x.shape(), DType::U8, x.device());
  Tensor out = apply_mask(x, mask, p, &rng);
  if (autograd::needs_grad({x})) {
    autograd::record(std::make_shared<DropoutBackward>(mask, p), {x}, {out});
  }
  return out;
}

}  // namespace longnet
