#include "layers/embedding.h"

#include <cmath>

#include "framework/ops/embedding.h"

namespace longnet {

Embedding::Embedding(int64_t vocab_size, int64_t dim, Initializer& init, double std) {
  LN_CHECK(vocab_size > 0 && dim > 0, "[Embedding] sizes must be positive, got vocab ", vocab_size, ", dim ", dim);
  weight_ = register_parameter("weight", init.normal({vocab_size, dim}, std > 0.0 ? std : 1.0 / std::sqrt(double(dim))));
}

Tensor Embedding::forward(const Tensor& ids) const { return embedding(weight_, ids); }

}  // namespace longnet
