#include "framework/ops/reduce.h"

#include <algorithm>
#include <cmath>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/reduce.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/reduce.h"
#endif
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

// The reduction as rows: x permuted so the reduced dims come last, made contiguous, viewed as
// (rows, len); plus the result shape with and without kept dims.
struct RowLayout {
  Tensor rows;
  Shape keep_shape;
  Shape out_shape;
};

std::vector<int64_t> normalize_dims(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, x.dim(), op);
    LN_CHECK(std::find(out.begin(), out.end(), w) == out.end(), "[", op, "] dim ", w, " repeated");
    out.push_back(w);
  }
  std::sort(out.begin(), out.end());
  return out;
}

RowLayout to_rows(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  std::vector<int64_t> order;
  Shape keep = x.shape(), out;
  int64_t len = 1;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (std::find(dims.begin(), dims.end(), d) == dims.end()) {
      order.push_back(d);
      out.push_back(x.shape()[static_cast<size_t>(d)]);
    }
  }
  // A scalar has no dims to index: reducing over its dim 0 (or -1) reduces its one element.
  for (int64_t d : x.dim() ? dims : std::vector<int64_t>{}) {
    order.push_back(d);
    len *= x.shape()[static_cast<size_t>(d)];
    keep[static_cast<size_t>(d)] = 1;
  }
  NoGradGuard no_grad;
  Tensor rows = ops::kernel_input(x.dim() ? permute(x, order) : x).contiguous();
  return {reshape(rows, {numel_of(out), len}), keep, out};
}

Tensor reduce(cpu::RowReduce op, const RowLayout& l, DType out_dtype, const char* name) {
  const ProfileScope scope(name);
  const DType dt = op == cpu::RowReduce::ArgMax ? DType::I64 : l.rows.dtype();
  Tensor out = Tensor::empty(l.out_shape, dt, l.rows.device());
  const cpu::RowReduceParams p{l.rows.raw_data(), out.raw_data(), l.rows.dtype(), l.rows.size(0), l.rows.size(1)};
  const Device dev = l.rows.device();
  LN_ON_DEVICE(dev, cpu::reduce_rows(op, p), cuda::reduce_rows(dev.index, op, p));
  return op == cpu::RowReduce::ArgMax ? out : cast(out, out_dtype);
}

class SumBackward final : public autograd::Node {
 public:
  SumBackward(Shape in, Shape keep, double scale) : in_(std::move(in)), keep_(std::move(keep)), scale_(scale) {}
  std::string name() const override { return scale_ == 1.0 ? "SumBackward" : "MeanBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    Tensor gk = reshape(g[0], keep_);
    if (scale_ != 1.0) gk = mul(gk, scale_);
    return {contiguous(expand(gk, in_))};
  }

 private:
  Shape in_, keep_;
  double scale_;
};

// Gradient flows to what each row's result depends on: the softmax weights exp(x - lse) for
// logsumexp, the first maximal element (one-hot of the argmax along `dim`) for max.
class SelectBackward final : public autograd::Node {
 public:
  SelectBackward(Tensor x, Tensor y_keep, Shape keep, int64_t dim, bool softmax_weights)
      : x_(std::move(x)), y_(std::move(y_keep)), keep_(std::move(keep)), dim_(dim), soft_(softmax_weights) {}
  std::string name() const override { return soft_ ? "LogSumExpBackward" : "MaxBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    Tensor gk = reshape(g[0], keep_);
    if (soft_) {
      // A row of all -inf has lse -inf and weights exp(-inf - -inf) = NaN; nothing in it can
      // change the result, so its gradient is 0 (merges rely on this for rows a branch skips).
      Tensor w = masked_fill(exp(sub(x_, y_)), compare(y_, -INFINITY, CompareOp::Eq), 0.0);
      return {mul(gk, w)};
    }
    if (x_.dim() == 0) return {gk};  // a scalar is its own maximum
    // y_ holds the argmax index (i64) with kept dims; compare against positions along the dim.
    const int64_t n = x_.shape()[static_cast<size_t>(dim_)];
    Shape pos_shape(keep_.size(), 1);
    pos_shape[static_cast<size_t>(dim_)] = n;
    Tensor pos = reshape(arange(0, static_cast<double>(n), 1, DType::I64, x_.device()), pos_shape);
    Tensor onehot = compare(pos, y_, CompareOp::Eq);
    return {where(onehot, gk, zeros({}, gk.dtype(), gk.device()))};
  }
  std::vector<Tensor> saved_tensors() const override { return {x_, y_}; }
  void release_saved() override {
    x_ = Tensor();
    y_ = Tensor();
  }

 private:
  Tensor x_, y_;
  Shape keep_;
  int64_t dim_;  // the reduced dim of max (unused by logsumexp)
  bool soft_;
};

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  LN_CHECK(x.dtype() != DType::Bool && x.dtype() != DType::U8, "[sum] unsupported dtype ",
           dtype_name(x.dtype()));
  const auto dims = normalize_dims(x, dims_in, "sum");
  const RowLayout l = to_rows(x, dims, "sum");
  Tensor out = reduce(cpu::RowReduce::Sum, l, x.dtype(), "sum");
  if (keepdim) out = reshape(out, l.keep_shape);
  if (autograd::needs_grad({x})) {
    autograd::record(std::make_shared<SumBackward>(x.shape(), l.keep_shape, 1.0), {x}, {out});
  }
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  ops::require_float("mean", x);
  const auto dims = normalize_dims(x, dims_in, "mean");
  const RowLayout l = to_rows(x, dims, "mean");
  const int64_t count = l.rows.size(1);
  LN_CHECK(count > 0, "[mean] reducing over an empty dim of shape ", shape_str(x.shape()));
  Tensor out;
  {
    NoGradGuard no_grad;
    out = cast(mul(reduce(cpu::RowReduce::Sum, l, l.rows.dtype(), "mean"), 1.0 / static_cast<double>(count)),
               x.dtype());
    if (keepdim) out = reshape(out, l.keep_shape);
  }
  if (autograd::needs_grad({x})) {
    autograd::record(std::make_shared<SumBackward>(x.shape(), l.keep_shape, 1.0 / static_cast<double>(count)),
                     {x}, {out});
  }
  return out;
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
  dim = wrap_dim(dim, x.dim(), "argmax");
  const RowLayout l = to_rows(x, {dim}, "argmax");
  LN_CHECK(l.rows.size(1) > 0, "[argmax] empty dim ", dim, " of shape ", shape_str(x.shape()));
  Tensor out = reduce(cpu::RowReduce::ArgMax, l, DType::I64, "argmax");
  return keepdim ? reshape(out, l.keep_shape) : out;
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  dim = wrap_dim(dim, x.dim(), "max");
  const RowLayout l = to_rows(x, {dim}, "max");
  LN_CHECK(l.rows.size(1) > 0, "[max] empty dim ", dim, " of shape ", shape_str(x.shape()));
  Tensor out = reduce(cpu::RowReduce::Max, l, x.dtype(), "max");
  if (keepdim) out = reshape(out, l.keep_shape);
  if (autograd::needs_grad({x})) {
    Tensor idx = reshape(reduce(cpu::RowReduce::ArgMax, l, DType::I64, "max"), l.keep_shape);
    autograd::record(std::make_shared<SelectBackward>(x.detach(), idx, l.keep_shape, dim, false), {x}, {out});
  }
  return out;
}

Tensor logsumexp(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  ops::require_float("logsumexp", x);
  const auto dims = normalize_dims(x, dims_in, "logsumexp");
  const RowLayout l = to_rows(x, dims, "logsumexp");
  Tensor out = reduce(cpu::RowReduce::LogSumExp, l, x.dtype(), "logsumexp");
  Tensor out_keep = reshape(out, l.keep_shape);
  if (keepdim) out = out_keep;
  if (autograd::needs_grad({x})) {
    autograd::record(std::make_shared<SelectBackward>(x.detach(), out_keep.detach(), l.keep_shape, 0, true),
                     {x}, {out});
  }
  return out;
}

}  // namespace longnet
