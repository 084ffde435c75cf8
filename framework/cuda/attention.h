#pragma once
// CUDA flash-style attention and the log-sum-exp merge; same contracts as framework/cpu/attention.h
// (same parameter structs; the layout arrays stay host pointers and are uploaded per call).
// Attention takes bf16 or f16 operands (f32 statistics, f32 accumulation on the tensor cores) with
// head dims 32, 64 or 128; the merge takes f32, bf16 or f16 outputs with f32 lse.
#include "framework/cpu/attention.h"

namespace longnet::cuda {

/// Forward on `device`: out and lse as cpu::attention_forward; through cuDNN's fused attention
/// where it expresses the call (see AttentionKernel in framework/ops/attention.h), else ours.
void attention_forward(int device, const cpu::AttentionForwardParams& p);
/// Backward on `device` (cuDNN where it expresses the call, as the forward); ours: dk, dv parallel over key tiles, dq over query tiles (no atomics; only the
/// block-bias gradient sums its tiles with f32 atomics, so its rounding order is not fixed).
void attention_backward(int device, const cpu::AttentionBackwardParams& p);
/// LSE merge of partial results on `device` (the part pointer arrays are host arrays of device
/// pointers).
void attention_merge(int device, const cpu::AttentionMergeParams& p);
void attention_merge_backward(int device, const cpu::AttentionMergeBackwardParams& p);

}  // namespace longnet::cuda
