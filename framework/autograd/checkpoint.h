#pragma once
// Activation checkpointing: keep a block's inputs, drop its activations, recompute in backward.
#include <cstdint>
#include <functional>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet {

/// A block of computation: inputs in, outputs out.
using CheckpointFn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;

/// Runs `fn` without recording its graph; in backward, re-runs it (with the same random stream
/// position, so dropout masks repeat) and back-propagates through the recomputed graph. Gradients
/// reach `inputs` and every parameter `fn` uses, exactly as without checkpointing.
std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs);

/// A row-wise block: row i of its output depends on row i of its input alone (norms, products,
/// activations, dropout). x (R, C) -> (R, C').
using RowwiseFn = std::function<Tensor(const Tensor&)>;

/// Checkpoints a row-wise block over chunks of rows: runs `fn` on x (..., C), flattened to rows,
/// `rows` rows at a time and without recording its graph, and keeps x alone. Backward recomputes
/// and back-propagates one chunk at a time, so no more than one chunk's activations exist at
/// once, in the forward or in the backward. Gradients reach x and every parameter `fn` uses as
/// without checkpointing (parameters accumulate over the chunks; their gradient-ready hooks fire
/// once, after the last chunk); dropout masks repeat as in `checkpoint`. Returns (..., C').
Tensor checkpoint_rows(const RowwiseFn& fn, const Tensor& x, int64_t rows);

}  // namespace longnet
