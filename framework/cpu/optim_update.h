#pragma once
// CPU kernels of the fused optimizer updates, and the per-element step both the CPU and the CUDA
// kernels apply (so the two compute the same expression in the same order).
#include <array>
#include <cmath>
#include <type_traits>

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

/// a * b and a + b, each rounded on its own. nvcc contracts a * b + c into one fused multiply-add
/// (a single rounding) by default while the CPU build rounds twice, so without these the GPU's
/// parameters would drift from the CPU's by an ulp or so per step, and far more in relative terms
/// where p - lr * g cancels. Division and sqrt are correctly rounded on both (nvcc's defaults).
template <class A>
LN_OPTIM_HOST_DEVICE A mul_rn(A a, A b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<A, float>) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

template <class A>
LN_OPTIM_HOST_DEVICE A add_rn(A a, A b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<A, float>) {
    return __fadd_rn(a, b);
  } else {
    return __dadd_rn(a, b);
  }
#else
  return a + b;
#endif
}

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
    g = add_rn(mul_rn(sign, g), mul_rn(l2, p));
    m = add_rn(mul_rn(beta1, m), mul_rn(one_minus_beta1, g));
    v = add_rn(mul_rn(beta2, v), mul_rn(mul_rn(one_minus_beta2, g), g));
    p = add_rn(mul_rn(p, decay), -(mul_rn(step_size, m) / add_rn(mul_rn(sqrt(v), inv_sqrt_bc2), eps)));
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
    g = add_rn(mul_rn(sign, g), mul_rn(weight_decay, p));
    if (momentum != A(0)) {
      buf = first_step ? g : add_rn(mul_rn(momentum, buf), mul_rn(one_minus_dampening, g));
      g = nesterov ? add_rn(g, mul_rn(momentum, buf)) : buf;
    }
    p = add_rn(p, -mul_rn(lr, g));
  }
};

/// One parameter of a batched update: its shape and its operands over it (the states in the
/// update's order, data null where unused).
struct UpdateOperands {
  Shape shape;
  StridedOperand param, grad;
  std::array<StridedOperand, 2> state;
};

/// AdamW in place over `shape`: param, exp_avg, exp_avg_sq and grad share one dtype, f32 or f64.
void adamw_update(const AdamWScalars& s, const Shape& shape, StridedOperand param, StridedOperand grad,
                  StridedOperand exp_avg, StridedOperand exp_avg_sq);
/// SGD in place over `shape`: param, grad and the momentum buffer (data null when momentum is 0)
/// share one dtype, f32 or f64.
void sgd_update(const SgdScalars& s, const Shape& shape, StridedOperand param, StridedOperand grad,
                StridedOperand momentum_buffer);

}  // namespace longnet::cpu
