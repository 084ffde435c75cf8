#pragma once
// Reductions over dimensions.
#include <vector>

#include "framework/core/tensor.h"

namespace longnet {

/// Sum over `dims` (all dims when empty); keepdim leaves size-1 dims in place.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
/// Mean over `dims` (all dims when empty).
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
/// Maximum over one dim; the gradient goes to the first maximal element.
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
/// Index (i64) of the first maximum over one dim; not differentiable.
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
/// log(sum(exp(x))) over `dims`, computed stably; rows of all -inf give -inf.
Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);

}  // namespace longnet
