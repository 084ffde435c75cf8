#pragma once
// Softmax and log-softmax over one dimension.
#include "framework/core/tensor.h"

namespace longnet {

/// exp(x - logsumexp(x)) along `dim`; computed in f32 or wider.
Tensor softmax(const Tensor& x, int64_t dim = -1);
/// x - logsumexp(x) along `dim`.
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

}  // namespace longnet
