#pragma once
// CPU elementwise kernels over strided operands.
#include "framework/cpu/copy.h"
#include "framework/ops/elementwise.h"

namespace longnet::cpu {

/// Scalars a unary function may use: the exponent of Pow, the bounds of Clamp, the operand of
/// AddScalar / MulScalar (in a).
struct UnaryScalars {
  double a = 0.0;
  double b = 0.0;
};

/// out = f(x) over `shape` (x and out share dtype f32 or f64).
void unary(UnaryOp op, UnaryScalars s, const Shape& shape, StridedOperand out, StridedOperand x);
/// dx = dy * f'(x) over `shape`, all three of one float dtype (bf16 and f16 included, computed in
/// f32). `saved` is what the derivative reads (x, or y = f(x); see math::unary_grad); ops whose
/// derivative reads neither never load it. Contiguous operands take a plain loop.
void unary_backward(UnaryOp op, UnaryScalars s, const Shape& shape, StridedOperand dx,
                    StridedOperand saved, StridedOperand dy);
/// out = a op b over `shape` (one numeric dtype for all three).
void binary(BinaryOp op, const Shape& shape, StridedOperand out, StridedOperand a, StridedOperand b);
/// out = a cmp b (out bool; a, b one numeric dtype).
void compare(CompareOp op, const Shape& shape, StridedOperand out, StridedOperand a, StridedOperand b);
/// out = cond ? a : b (cond bool or u8; a, b, out one dtype).
void where(const Shape& shape, StridedOperand out, StridedOperand cond, StridedOperand a,
           StridedOperand b);

}  // namespace longnet::cpu
