#include "tests/support/parity.h"

namespace longnet::testing {

ParityTolerance parity_tolerance(DType dtype) {
  switch (dtype) {
    case DType::F64: return {1e-10, 1e-9};
    case DType::F32: return {1e-5, 1e-4};
    default: return {2e-2, 2e-2};  // bf16 / f16: a couple of units in the last place
  }
}

::testing::AssertionResult cpu_cuda_parity(const TensorFn& fn, const std::vector<Tensor>& inputs,
                                           DType dtype, bool differentiate, bool make_non_contiguous) {
  return cpu_cuda_parity(fn, inputs, dtype, parity_tolerance(dtype), differentiate, make_non_contiguous);
}

namespace {

// A leaf on `device` in `dtype` holding `src`'s values; optionally stored transposed so that the
// returned view of the original shape is not contiguous.
Tensor prepare(const Tensor& src, DType dtype, Device device, bool non_contiguous, bool grad,
               Tensor* leaf_out) {
  NoGradGuard ng;
  Tensor base = is_floating(src.dtype()) ? src.to(dtype) : src;
  // clone(): the leaf must be a fresh tensor, never the caller's input (whose gradient would
  // otherwise accumulate over repeated checks).
  if (non_contiguous && base.dim() >= 2) {
    Tensor stored = base.transpose(-1, -2).contiguous().to(device).clone();
    if (grad && is_floating(stored.dtype())) stored.requires_grad_(true);
    *leaf_out = stored;
    return stored;  // caller transposes back inside the graph
  }
  Tensor stored = base.to(device).clone();
  if (grad && is_floating(stored.dtype())) stored.requires_grad_(true);
  *leaf_out = stored;
  return stored;
}

}  // namespace

::testing::AssertionResult cpu_cuda_parity(const TensorFn& fn, const std::vector<Tensor>& inputs,
                                           DType dtype, ParityTolerance tol, bool differentiate,
                                           bool make_non_contiguous) {
  std::vector<Tensor> outs, leaves_cpu, leaves_gpu;
  for (Device device : {Device::cpu(), Device::cuda(0)}) {
    std::vector<Tensor> args, leaves;
    for (const Tensor& t : inputs) {
      Tensor leaf;
      Tensor stored = prepare(t, dtype, device, make_non_contiguous, differentiate, &leaf);
      leaves.push_back(leaf);
      args.push_back(make_non_contiguous && t.dim() >= 2 ? stored.transpose(-1, -2) : stored);
    }
    Tensor out = fn(args);
    if (differentiate && out.requires_grad()) {
      Generator g(99);
      Tensor up = randn(out.shape(), DType::F32, Device::cpu(), &g).to(out.dtype()).to(device);
      out.backward(up);
    }
    outs.push_back(out);
    (device.is_cpu() ? leaves_cpu : leaves_gpu) = leaves;
  }
  auto r = all_close(outs[1].to(Device::cpu()).to(DType::F64), outs[0].to(DType::F64), tol.atol, tol.rtol);
  if (!r) return ::testing::AssertionFailure() << "outputs differ: " << r.message();
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor gc = leaves_cpu[i].grad(), gg = leaves_gpu[i].grad();
    if (gc.defined() != gg.defined()) {
      return ::testing::AssertionFailure() << "input " << i << ": gradient defined on one device only";
    }
    if (!gc.defined()) continue;
    auto rg = all_close(gg.to(Device::cpu()).to(DType::F64), gc.to(DType::F64), tol.atol, tol.rtol);
    if (!rg) return ::testing::AssertionFailure() << "gradient of input " << i << " differs: " << rg.message();
  }
  return ::testing::AssertionSuccess();
}

}  // namespace longnet::testing
