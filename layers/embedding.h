#pragma once
// Token embedding table.
#include "layers/init.h"
#include "layers/module.h"

namespace longnet {

/// Rows of a (vocab, dim) table, initialised N(0, std^2) (std = dim^-1/2 when not given, the
/// LongNet/torchscale choice, which the model's sqrt(dim) embedding scale brings back to unit size).
class Embedding : public Module {
 public:
  Embedding(int64_t vocab_size, int64_t dim, Initializer& init, double std = 0.0);
  std::string type_name() const override { return "Embedding"; }
  /// ids (...) of i32/i64 -> (..., dim) in the table's dtype.
  Tensor forward(const Tensor& ids) const;

  const Tensor& weight() const { return weight_; }
  int64_t vocab_size() const { return weight_.size(0); }
  int64_t dim() const { return weight_.size(1); }

 private:
  Tensor weight_;
};

}  // namespace longnet
