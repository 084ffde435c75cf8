#pragma once
// CUDA elementwise kernels; same contracts as framework/cpu/elementwise.h, for every float dtype
// (f32, f64, bf16, f16; arithmetic in f32 for the 16-bit types) and, for binary and compare, the
// integer types. Operands live on `device`.
#include "framework/cpu/elementwise.h"

namespace longnet::cuda {

using cpu::StridedOperand;
using cpu::UnaryScalars;

void unary(int device, UnaryOp op, UnaryScalars s, const Shape& shape, StridedOperand out,
           StridedOperand x);
/// dx = dy * f'(saved) as cpu::unary_backward; contiguous 16-byte-aligned operands take one
/// vectorised pass (16-byte loads of dy and of saved where the derivative reads it).
void unary_backward(int device, UnaryOp op, UnaryScalars s, const Shape& shape, StridedOperand dx,
                    StridedOperand saved, StridedOperand dy);
void binary(int device, BinaryOp op, const Shape& shape, StridedOperand out, StridedOperand a,
            StridedOperand b);
void compare(int device, CompareOp op, const Shape& shape, StridedOperand out, StridedOperand a,
             StridedOperand b);
void where(int device, const Shape& shape, StridedOperand out, StridedOperand cond, StridedOperand a,
           StridedOperand b);

}  // namespace longnet::cuda
