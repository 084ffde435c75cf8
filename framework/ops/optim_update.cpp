#include "framework/ops/optim_update.h"

#include <cmath>
#include <vector>

#include "framework/autograd/grad_mode.h"
#include "framework/core/profiler.h"
#include "framework/cpu/optim_update.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/optim_update.h"
#endif
#include "framework/ops/common.h"

namespace longnet {
namespace {

cpu::StridedOperand operand(const Tensor& t) {
  return t.defined() ? cpu::StridedOperand{t.raw_data(), t.dtype(), t.strides().data()} : cpu::StridedOperand{};
}

// Checks the operands shared by every update (states: param's shape, dtype and device); returns
// their device.
Device check_operands(const char* op, const Tensor& param, const Tensor& grad, std::initializer_list<Tensor> states) {
  LN_CHECK(param.defined() && grad.defined(), "[", op, "] undefined parameter or gradient");
  LN_CHECK(param.is_leaf(), "[", op, "] the parameter ", shape_str(param.shape()),
           " is the output of an op; updates apply to leaves only");
  LN_CHECK(param.dtype() == DType::F32 || param.dtype() == DType::F64, "[", op,
           "] parameters must be f32 or f64, got ", dtype_name(param.dtype()), " ", shape_str(param.shape()));
  const bool grad_ok = grad.dtype() == param.dtype() || (param.dtype() == DType::F32 && is_reduced_float(grad.dtype()));
  LN_CHECK(grad_ok, "[", op, "] gradient ", dtype_name(grad.dtype()), " ", shape_str(grad.shape()),
           " does not fit parameter ", dtype_name(param.dtype()), " ", shape_str(param.shape()),
           " (f32 parameters take f32, bf16 or f16 gradients; f64 parameters f64)");
  LN_CHECK(grad.shape() == param.shape(), "[", op, "] gradient ", shape_str(grad.shape()), " does not match parameter ",
           shape_str(param.shape()));
  const Device dev = ops::common_device(op, {param, grad});
  for (const Tensor& s : states) {
    LN_CHECK(s.defined(), "[", op, "] undefined optimizer state for parameter ", shape_str(param.shape()));
    LN_CHECK(s.shape() == param.shape() && s.dtype() == param.dtype(), "[", op, "] state ", dtype_name(s.dtype()), " ",
             shape_str(s.shape()), " does not match parameter ", dtype_name(param.dtype()), " ",
             shape_str(param.shape()));
    LN_CHECK(s.device() == dev, "[", op, "] state on ", s.device().str(), " for a parameter on ", dev.str());
  }
  return dev;
}

void check_at_least_zero(const char* op, const char* name, double value) {
  LN_CHECK(std::isfinite(value) && value >= 0.0, "[", op, "] ", name, " must be finite and >= 0, got ", value);
}

void check_unit(const char* op, const char* name, double value, bool one_allowed) {
  LN_CHECK(value >= 0.0 && (one_allowed ? value <= 1.0 : value < 1.0), "[", op, "] ", name, " must lie in [0, 1",
           one_allowed ? "]" : ")", ", got ", value);
}

// Checks Adam(W)'s hyper-parameters and folds them, with the step's bias corrections, into the
// kernels' scalars (in f64, the same for every tensor of a batch).
cpu::AdamWScalars adamw_scalars(const char* op, const AdamWParams& p) {
  check_at_least_zero(op, "lr", p.lr);
  check_unit(op, "beta1", p.beta1, false);
  check_unit(op, "beta2", p.beta2, false);
  check_at_least_zero(op, "eps", p.eps);
  check_at_least_zero(op, "weight_decay", p.weight_decay);
  LN_CHECK(p.step >= 1, "[", op, "] step counts from 1, got ", p.step);
  const double t = static_cast<double>(p.step);
  cpu::AdamWScalars s;
  s.beta1 = p.beta1, s.one_minus_beta1 = 1.0 - p.beta1;
  s.beta2 = p.beta2, s.one_minus_beta2 = 1.0 - p.beta2;
  s.step_size = p.lr / (1.0 - std::pow(p.beta1, t));
  s.inv_sqrt_bc2 = 1.0 / std::sqrt(1.0 - std::pow(p.beta2, t));
  s.eps = p.eps;
  s.decay = p.l2_decay ? 1.0 : 1.0 - p.lr * p.weight_decay;
  s.l2 = p.l2_decay ? p.weight_decay : 0.0;
  s.grad_sign = p.maximize ? -1.0 : 1.0;
  return s;
}

cpu::SgdScalars sgd_scalars(const char* op, const SgdParams& p) {
  check_at_least_zero(op, "lr", p.lr);
  check_at_least_zero(op, "momentum", p.momentum);
  check_unit(op, "dampening", p.dampening, true);
  check_at_least_zero(op, "weight_decay", p.weight_decay);
  LN_CHECK(!p.nesterov || (p.momentum > 0.0 && p.dampening == 0.0), "[", op,
           "] nesterov momentum needs momentum > 0 and dampening 0, got momentum ", p.momentum, " and dampening ",
           p.dampening);
  return {p.lr, p.momentum, 1.0 - p.dampening, p.weight_decay, p.maximize ? -1.0 : 1.0, p.nesterov, p.first_step};
}

void check_list_size(const char* op, const char* what, size_t got, size_t want) {
  LN_CHECK(got == want, "[", op, "] ", want, " parameters but ", got, " ", what);
}

// Checks every operand of a batched update (so that a bad one anywhere leaves every parameter
// unchanged) and returns the batch's device. check_one(i): check_operands on parameter i.
template <class CheckOne>
Device check_batch(const char* op, std::span<const Tensor> params, std::span<const Tensor> grads,
                   const CheckOne& check_one) {
  check_list_size(op, "gradients", grads.size(), params.size());
  Device dev;
  for (size_t i = 0; i < params.size(); ++i) {
    const Device d = check_one(i);
    if (i == 0) dev = d;
    LN_CHECK(d == dev, "[", op, "] parameter ", i, " ", shape_str(params[i].shape()), " is on ", d.str(),
             " but parameter 0 on ", dev.str(), ": a batch lives on one device");
  }
  return dev;
}

#ifdef LONGNET_WITH_CUDA
// The kernels' view of parameter i of a batch (empty parameters are left out).
std::vector<cpu::UpdateOperands> batch_operands(std::span<const Tensor> params, std::span<const Tensor> grads,
                                                std::span<const Tensor> states0, std::span<const Tensor> states1) {
  std::vector<cpu::UpdateOperands> out;
  out.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].numel() == 0) continue;
    out.push_back({params[i].shape(), operand(params[i]), operand(grads[i]),
                   {i < states0.size() ? operand(states0[i]) : cpu::StridedOperand{},
                    i < states1.size() ? operand(states1[i]) : cpu::StridedOperand{}}});
  }
  return out;
}
#endif

}  // namespace

void adamw_update_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                   const AdamWParams& p) {
  const char* op = "adamw_update_";
  const ProfileScope scope(op);
  const Device dev = check_operands(op, param, grad, {exp_avg, exp_avg_sq});
  const cpu::AdamWScalars s = adamw_scalars(op, p);
  if (param.numel() == 0) return;
  NoGradGuard no_grad;
  const Tensor g = ops::kernel_input(grad);  // CPU kernels take the parameter's dtype
  LN_ON_DEVICE(dev,
               cpu::adamw_update(s, param.shape(), operand(param), operand(g), operand(exp_avg), operand(exp_avg_sq)),
               cuda::adamw_update(dev.index, s, param.shape(), operand(param), operand(g), operand(exp_avg),
                                  operand(exp_avg_sq)));
}

void sgd_update_(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdParams& p) {
  const char* op = "sgd_update_";
  const Device dev = p.momentum != 0.0 ? check_operands(op, param, grad, {momentum_buffer})
                                       : check_operands(op, param, grad, {});
  const cpu::SgdScalars s = sgd_scalars(op, p);
  if (param.numel() == 0) return;
  NoGradGuard no_grad;
  const Tensor g = ops::kernel_input(grad);
  const Tensor buf = p.momentum != 0.0 ? momentum_buffer : Tensor();
  LN_ON_DEVICE(dev, cpu::sgd_update(s, param.shape(), operand(param), operand(g), operand(buf)),
               cuda::sgd_update(dev.index, s, param.shape(), operand(param), operand(g), operand(buf)));
}

void adamw_update_many_(std::span<const Tensor> params, std::span<const Tensor> grads,
                        std::span<const Tensor> exp_avgs, std::span<const Tensor> exp_avg_sqs, const AdamWParams& p) {
  const char* op = "adamw_update_many_";
  check_list_size(op, "exp_avg tensors", exp_avgs.size(), params.size());
  check_list_size(op, "exp_avg_sq tensors", exp_avg_sqs.size(), params.size());
  const Device dev = check_batch(op, params, grads, [&](size_t i) {
    return check_operands(op, params[i], grads[i], {exp_avgs[i], exp_avg_sqs[i]});
  });
  [[maybe_unused]] const cpu::AdamWScalars s = adamw_scalars(op, p);
  if (params.empty()) return;
  if (dev.is_cpu()) {  // no launches to save: the per-tensor op, tensor by tensor
    for (size_t i = 0; i < params.size(); ++i) adamw_update_(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], p);
    return;
  }
#ifdef LONGNET_WITH_CUDA
  const ProfileScope scope(op);
  cuda::adamw_update_many(dev.index, s, batch_operands(params, grads, exp_avgs, exp_avg_sqs));
#endif
}

void sgd_update_many_(std::span<const Tensor> params, std::span<const Tensor> grads,
                      std::span<const Tensor> momentum_buffers, const SgdParams& p) {
  const char* op = "sgd_update_many_";
  const bool momentum = p.momentum != 0.0;
  if (momentum) check_list_size(op, "momentum buffers", momentum_buffers.size(), params.size());
  const Device dev = check_batch(op, params, grads, [&](size_t i) {
    return momentum ? check_operands(op, params[i], grads[i], {momentum_buffers[i]})
                    : check_operands(op, params[i], grads[i], {});
  });
  [[maybe_unused]] const cpu::SgdScalars s = sgd_scalars(op, p);
  if (params.empty()) return;
  if (dev.is_cpu()) {
    for (size_t i = 0; i < params.size(); ++i) {
      sgd_update_(params[i], grads[i], momentum ? momentum_buffers[i] : Tensor(), p);
    }
    return;
  }
#ifdef LONGNET_WITH_CUDA
  const ProfileScope scope(op);
  cuda::sgd_update_many(dev.index, s,
                        batch_operands(params, grads, momentum ? momentum_buffers : std::span<const Tensor>{}, {}));
#endif
}

}  // namespace longnet
