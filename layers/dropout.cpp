#include "layers/dropout.h"

#include "framework/ops/dropout.h"

namespace longnet {

Dropout::Dropout(double p) : p_(p) { LN_CHECK(p >= 0.0 && p < 1.0, "[Dropout] p must be in [0, 1), got ", p); }

Tensor Dropout::forward(const Tensor& x) const { return active() ? dropout(x, p_, true) : x; }

}  // namespace longnet
