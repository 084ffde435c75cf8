#pragma once
// CUDA cross-entropy over (rows, classes) logits in f32, f64, bf16 or f16, rows p.ld elements
// apart (any ld >= classes, any row alignment); same contracts as framework/cpu/loss.h except
// where noted: lse is always f32 (f64 for f64 logits), and the loss,
// the count of non-ignored rows and the target check stay on the device (no host synchronisation).
// Bad targets (outside [0, classes), not ignored) make the loss NaN and their gradient rows NaN.
#include "framework/cpu/loss.h"

namespace longnet::cuda {

/// Device outputs of the forward, each written by the forward's last kernel.
struct CrossEntropyOutputs {
  void* loss = nullptr;      // () f32 (f64 for f64 logits): mean over counted rows, 0 when none,
                             // NaN when any target is bad
  int64_t* count = nullptr;  // () rows whose target is not ignore_index
  int64_t* bad = nullptr;    // (2): first row whose target is outside [0, classes) and not
                             // ignored, or -1; and that target
};

/// Per row, max and log-sum-exp in one streaming pass (online rescaling) into p.lse, and the
/// row's loss lse - logit[target]; then one block sums the row losses over counted rows in a fixed
/// order, counts them, and finds the first bad target (whose row is not counted). Nothing is read
/// back to the host.
void cross_entropy_forward(int device, const cpu::CrossEntropyParams& p, const CrossEntropyOutputs& out);
/// The forward's first pass alone, for logits that come in row chunks: per row of p, the
/// log-sum-exp into p.lse and the row's loss (lse - logit[target]; NaN for a bad target, 0 for an
/// ignored row) into row_loss (p.rows, f32; f64 for f64 logits).
void cross_entropy_rows(int device, const cpu::CrossEntropyParams& p, void* row_loss);
/// The forward's last pass over the row losses of all rows (p.rows of them, with p's targets;
/// p.logits and p.lse are not read): the mean, the count and the first bad target into `out`.
void cross_entropy_finish(int device, const cpu::CrossEntropyParams& p, const void* row_loss,
                          const CrossEntropyOutputs& out);
/// The count alone, as cross_entropy_finish forms it (rows whose target is neither ignore_index
/// nor bad), from p's targets: what cross_entropy_backward needs before any row loss exists, when
/// the gradient is formed chunk by chunk in the forward.
void cross_entropy_count(int device, const cpu::CrossEntropyParams& p, int64_t* count);
/// dlogits = (exp(logits - lse) - onehot(target)) * grad / count in one pass, 0 on ignored rows,
/// NaN on rows with a bad target.
/// p.scale is not used: `grad` (() f32, f64 for f64 logits; null: 1) and `count` are read on the
/// device.
void cross_entropy_backward(int device, const cpu::CrossEntropyBackwardParams& p, const void* grad,
                            const int64_t* count);
/// The most classes cross_entropy_rows_backward takes on `device` for logits of `dtype` and
/// targets of `target_dtype`: a row must fit one block's shared memory (the device's opt-in
/// maximum) at any alignment, e.g. about 116K bf16 or 58K f32 classes on an H100.
int64_t cross_entropy_fused_classes(int device, DType dtype, DType target_dtype);
/// cross_entropy_rows, then cross_entropy_backward with grad 1 (null) into `dlogits`, in one read
/// of each row instead of two: each row is held in shared memory between its loss and its
/// gradient. lse, row_loss and dlogits are bit for bit those of the two calls. dlogits has
/// p.ld as its row stride and the logits' offset modulo 16 bytes (checked); dlogits == p.logits
/// writes the gradient in place. With more than cross_entropy_fused_classes classes it launches
/// nothing and returns false: the caller then makes the two calls.
bool cross_entropy_rows_backward(int device, const cpu::CrossEntropyParams& p, void* row_loss, void* dlogits,
                                 const int64_t* count);
/// out = in * grad over n contiguous elements, rounded once to out_dtype; in has out_dtype, or is
/// f32 for bf16/f16 out (a gradient accumulated in f32). `grad` is () on the device, f32 (f64 for
/// f64 out). In place (in == out) with grad == 1 the kernel returns without touching the data.
void scale_gradient(int device, const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                    const void* grad);

}  // namespace longnet::cuda
