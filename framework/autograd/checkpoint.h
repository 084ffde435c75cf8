#pragma once
// Activation checkpointing: keep a block's inputs, drop its activations, recompute in backward.
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

}  // namespace longnet
