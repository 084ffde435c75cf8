#pragma once
// CPU cross-entropy kernels: fused log-softmax + negative log-likelihood over (rows, classes).
#include <cstdint>

#include "framework/core/dtype.h"
#include "framework/core/error.h"

namespace longnet::cpu {

/// Forward: logits (rows, classes) in `dtype` (f32 or f64), row r starting at logits + r * ld
/// elements (ld 0: classes, the contiguous layout); targets (rows) contiguous in `target_dtype`
/// (i32 or i64). Writes lse (rows, `dtype`): the log-sum-exp of each row, 0 for ignored rows.
struct CrossEntropyParams {
  const void* logits = nullptr;
  const void* targets = nullptr;
  void* lse = nullptr;
  DType dtype = DType::F32;
  DType target_dtype = DType::I64;
  int64_t rows = 0;
  int64_t classes = 0;
  int64_t ignore_index = -100;
  // Row stride in elements, at least classes; a padded row (the chunked LM head's aligned block)
  // leaves its columns past classes unread. Last, so that older aggregate initialisations hold.
  int64_t ld = 0;
};

/// Sum of the per-row losses lse - logit[target] over non-ignored rows, and their count.
struct CrossEntropySum {
  double loss = 0.0;
  int64_t count = 0;
};

/// Backward: dlogits (rows, classes) = (softmax - onehot(target)) * scale, 0 on ignored rows.
/// logits and dlogits share the row stride ld (0: classes); columns past classes are neither read
/// nor written, so a padded block may take its gradient in place and keep its pad.
struct CrossEntropyBackwardParams {
  const void* logits = nullptr;
  const void* targets = nullptr;
  const void* lse = nullptr;
  void* dlogits = nullptr;
  DType dtype = DType::F32;
  DType target_dtype = DType::I64;
  int64_t rows = 0;
  int64_t classes = 0;
  int64_t ignore_index = -100;
  double scale = 1.0;
  int64_t ld = 0;  // row stride of logits and dlogits in elements (0: classes)
};

/// The row stride p describes: p.ld, or classes when 0. Throws when it is below classes.
template <class P>
int64_t row_stride(const P& p) {
  const int64_t ld = p.ld == 0 ? p.classes : p.ld;
  LN_CHECK(ld >= p.classes, "[cross_entropy] row stride ", ld, " is below the ", p.classes, " classes");
  return ld;
}

/// Index of the first target outside [0, classes) that is not ignore_index, or -1 when all are
/// valid; its value goes to *bad_value.
int64_t find_bad_target(const void* targets, DType target_dtype, int64_t rows, int64_t classes,
                        int64_t ignore_index, int64_t* bad_value);
/// Number of rows whose target is not ignore_index (the count the loss is a mean over, once
/// find_bad_target has found every other target valid).
int64_t count_not_ignored(const void* targets, DType target_dtype, int64_t rows, int64_t ignore_index);
/// Per-row lse and the summed loss (summed in row order, so deterministic). Targets must be valid.
CrossEntropySum cross_entropy_forward(const CrossEntropyParams& p);
/// dlogits for the given scale (the incoming gradient divided by the count).
void cross_entropy_backward(const CrossEntropyBackwardParams& p);

}  // namespace longnet::cpu
