#include "layers/attention/dense.h"

namespace longnet {

AttentionResult DenseAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const AttentionOptions& options) {
  check_core_inputs("dense", q, k, v, options, true);
  AttentionParams p;
  p.scale = scale_;
  p.causal = options.causal;
  p.causal_offset = k.size(1) - q.size(1);
  p.key_padding_mask = options.key_padding_mask;
  const AttentionOutput r = attention(q, k, v, p);
  return {r.out, r.lse, Tensor()};
}

}  // namespace longnet
