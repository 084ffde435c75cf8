#pragma once
// CPU cross-entropy kernels: fused log-softmax + negative log-likelihood over (rows, classes).
#include <cstdint>

#include "framework/core/dtype.h"

namespace longnet::cpu {

/// Forward: logits (rows, classes) contiguous in `dtype` (f32 or f64); targets (rows) contiguous
/// in `target_dtype` (i32 or i64). Writes lse (rows, `dtype`): the log-sum-exp of each row, 0 for
/// ignored rows.
struct CrossEntropyParams {
  const void* logits = nullptr;
  const void* targets = nullptr;
  void* lse = nullptr;
  DType dtype = DType::F32;
  DType target_dtype = DType::I64;
  int64_t rows = 0;
  int64_t classes = 0;
  int64_t ignore_index = -100;
};

/// Sum of the per-row losses lse - logit[target] over non-ignored rows, and their count.
struct CrossEntropySum {
  double loss = 0.0;
  int64_t count = 0;
};

/// Backward: dlogits (rows, classes) = (softmax - onehot(target)) * scale, 0 on ignored rows.
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
};

/// Index of the first target outside [0, classes) that is not ignore_index, or -1 when all are
/// valid; its value goes to *bad_value.
int64_t find_bad_target(const void* targets, DType target_dtype, int64_t rows, int64_t classes,
                        int64_t ignore_index, int64_t* bad_value);
/// Per-row lse and the summed loss (summed in row order, so deterministic). Targets must be valid.
CrossEntropySum cross_entropy_forward(const CrossEntropyParams& p);
/// dlogits for the given scale (the incoming gradient divided by the count).
void cross_entropy_backward(const CrossEntropyBackwardParams& p);

}  // namespace longnet::cpu
