#pragma once
// Fused optimizer updates: one pass over a parameter, its gradient and its optimizer state, in
// place. Not recorded by autograd (optimizers call them under NoGradGuard). Parameters and states
// are f32 (f64 for checks); the gradient may also be bf16 or f16 for an f32 parameter (mixed
// precision: f32 master weights, 16-bit gradients), widened as it is read.
#include <span>

#include "framework/core/tensor.h"

namespace longnet {

/// Hyper-parameters of one Adam / AdamW step (PyTorch's semantics and defaults).
struct AdamWParams {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled (AdamW): param *= 1 - lr * weight_decay; 0 gives Adam
  int64_t step = 1;           // this step's number, from 1, for the bias corrections 1 - beta^step
  bool maximize = false;      // ascend the gradient instead of descending
  bool l2_decay = false;      // Adam's L2 decay instead of decoupled: grad += weight_decay * param
};

/// One Adam(W) step on every element:
///   g = ±grad (+ wd * param with l2_decay); m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
///   param = param * (1 - lr wd) - lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps).
/// param, exp_avg, exp_avg_sq: one shape and float dtype; grad: the same shape, param's dtype or
/// (for f32 param) bf16 / f16. param must be a leaf; its data is written in place.
void adamw_update_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                   const AdamWParams& p);

/// Hyper-parameters of one SGD step (PyTorch's semantics).
struct SgdParams {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;  // L2: grad += weight_decay * param
  bool nesterov = false;      // needs momentum > 0 and dampening 0
  bool maximize = false;
  bool first_step = false;    // the momentum buffer is set to the gradient instead of decayed
};

/// One SGD step on every element:
///   g = ±grad + wd * param; buf = momentum * buf + (1 - dampening) * g (buf = g on the first step);
///   g = nesterov ? g + momentum * buf : buf (when momentum > 0); param -= lr * g.
/// momentum_buffer: param's shape and dtype, or undefined when momentum is 0.
void sgd_update_(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdParams& p);

/// adamw_update_ on every (params[i], grads[i], exp_avgs[i], exp_avg_sqs[i]), all with the same
/// hyper-parameters and step and on one device, with bit-identical results. On a GPU the
/// contiguous tensors are updated by one kernel launch per batch of up to 64 (their pointers
/// travel as kernel parameters, so nothing is copied or synchronised); the CPU runs the
/// per-tensor op on each.
void adamw_update_many_(std::span<const Tensor> params, std::span<const Tensor> grads,
                        std::span<const Tensor> exp_avgs, std::span<const Tensor> exp_avg_sqs, const AdamWParams& p);

/// sgd_update_ on every (params[i], grads[i], momentum_buffers[i]) in the manner of
/// adamw_update_many_. momentum_buffers: one per parameter, or empty when momentum is 0.
void sgd_update_many_(std::span<const Tensor> params, std::span<const Tensor> grads,
                      std::span<const Tensor> momentum_buffers, const SgdParams& p);

}  // namespace longnet
