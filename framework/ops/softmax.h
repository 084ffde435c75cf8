#pragma once
// Softmax and log-softmax over one dimension.
#include "framework/core/tensor.h"

namespace longnet {

/// exp(x - logsumexp(x)) along `dim`; computed in f32 or wider, returned in x's dtype.
/// A slice that is entirely -inf (fully masked) gives zeros rather than NaN.
Tensor softmax(const Tensor& x, int64_t dim = -1);
/// x - logsumexp(x) along `dim`. A slice that is entirely -inf gives -inf rather than NaN.
Tensor log_softmax(const Tensor& x, int64_t dim = -1);

}  // namespace longnet
