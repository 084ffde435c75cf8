#pragma once
// CPU kernels of the fused optimizer updates, and the per-element step both the CPU and the CUDA
// kernels apply (so the two compute the same expression in the same order).
#include <cmath>

#include "framework/cpu/copy.h"

#if defined(__CUDACC__)
#define LN_OPTIM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LN_OPTIM_HOST_DEVICE inline
#endif

namespace longnet::cpu {

/// One Adam(W) step's coefficients, bias corrections folded in (computed in f64 by the op).
struct AdamWScalars {
  double beta1 = 0.9, one_minus_beta1 = 0.1;
  double beta2 = 0.999, one_minus_beta2 = 0.001;
  double step_size = 1e-3;     // lr / (1 - beta1^t)
  double inv_sqrt_bc2 = 1.0;   // 1 / sqrt(1 - beta2^t)
  double eps = 1e-8;
  double decay = 1.0;          // 1 - lr * weight_decay when decoupled, else 1
  double l2 = 0.0;             // weight_decay when added to the gradient (Adam's L2), else 0
  double grad_sign = 1.0;      // -1 when maximising
};

/// One SGD step's coefficients.
struct SgdScalars {
  double lr = 1e-2;
  double momentum = 0.0;
  double one_minus_dampening = 1.0;
  double weight_decay = 0.0;
  double grad_sign = 1.0;
  bool nesterov = false;
  bool first_step = false;
};

/// The AdamW step on one element in arithmetic type A (float, or double for f64).
template <class A>
struct AdamWStep {
  A beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, inv_sqrt_bc2, eps, decay, l2, sign;

  explicit AdamWStep(const AdamWScalars& s)
      : beta1(A(s.beta1)), one_minus_beta1(A(s.one_minus_beta1)), beta2(A(s.beta2)),
        one_minus_beta2(A(s.one_minus_beta2)), step_size(A(s.step_size)), inv_sqrt_bc2(A(s.inv_sqrt_bc2)),
        eps(A(s.eps)), decay(A(s.decay)), l2(A(s.l2)), sign(A(s.grad_sign)) {}

  LN_OPTIM_HOST_DEVICE void operator()(A& p, A g, A& m, A& v) const {
    using std::sqrt;
    g = sign * g + l2 * p;
    m = beta1 * m + one_minus_beta1 * g;
    v = beta2 * v + one_minus_beta2 * g * g;
    p = p * decay - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps);
  }
};

/// The SGD step on one element; `buf` is ignored when momentum is 0.
template <class A>
struct SgdStep {
  A lr, momentum, one_minus_dampening, weight_decay, sign;
  bool nesterov, first_step;

  explicit SgdStep(const SgdScalars& s)
      : lr(A(s.lr)), momentum(A(s.momentum)), one_minus_dampening(A(s.one_minus_dampening)),
        weight_decay(A(s.weight_decay)), sign(A(s.grad_sign)), nesterov(s.nesterov), first_step(s.first_step) {}

  LN_OPTIM_HOST_DEVICE void operator()(A& p, A g, A& buf) const {
    g = sign * g + weight_decay * p;
    if (momentum != A(0)) {
      buf = first_step ? g : momentum * buf + one_minus_dampening * g;
      g = nesterov ? g + momentum * buf : buf;
    }
    p = p - lr * g;
  }
};

/// AdamW in place over `shape`: param, exp_avg, exp_avg_sq and grad share one dtype, f32 or f64.
void adamw_update(const AdamWScalars& s, const Shape& shape, StridedOperand param, StridedOperand grad,
                  StridedOperand exp_avg, StridedOperand exp_avg_sq);
/// SGD in place over `shape`: param, grad and the momentum buffer (data null when momentum is 0)
/// share one dtype, f32 or f64.
void sgd_update(const SgdScalars& s, const Shape& shape, StridedOperand param, StridedOperand grad,
                StridedOperand momentum_buffer);

}  // namespace longnet::cpu
