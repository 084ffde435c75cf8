#include "framework/ops/reduce.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>

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

// The reduction over a contiguous tensor read as (outer, len, inner), len running over the
// reduced elements. When the reduced dims (size-1 dims aside) are one run of consecutive dims of
// a contiguous input, the input is read where it is (inner > 1 when kept dims follow the run,
// which only sums support); otherwise it is permuted so the reduced dims come last and copied
// (inner = 1). Also the result shape with and without kept dims.
struct ReduceLayout {
  Tensor data;
  int64_t outer = 1, len = 1, inner = 1;
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

bool is_reduced(const std::vector<int64_t>& dims, int64_t d) {
  return std::find(dims.begin(), dims.end(), d) != dims.end();
}

// Sizes (outer, len, inner) when the reduced dims of size > 1 are consecutive among the dims of
// size > 1, else nullopt.
std::optional<std::array<int64_t, 3>> reduced_run(const Shape& shape, const std::vector<int64_t>& dims) {
  std::array<int64_t, 3> sizes{1, 1, 1};
  int part = 0;  // 0 before the run, 1 inside it, 2 after it
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    const int p = is_reduced(dims, static_cast<int64_t>(d)) ? 1 : (part == 0 ? 0 : 2);
    if (p < part) return std::nullopt;  // a reduced dim after kept dims that followed the run
    part = p;
    sizes[static_cast<size_t>(p)] *= shape[d];
  }
  return sizes;
}

ReduceLayout to_layout(const Tensor& x, const std::vector<int64_t>& dims, bool allow_inner) {
  ReduceLayout l;
  l.keep_shape = x.shape();
  std::vector<int64_t> order;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (!is_reduced(dims, d)) {
      order.push_back(d);
      l.out_shape.push_back(x.shape()[static_cast<size_t>(d)]);
    }
  }
  // A scalar has no dims to index: reducing over its dim 0 (or -1) reduces its one element.
  int64_t len = 1;
  for (int64_t d : x.dim() ? dims : std::vector<int64_t>{}) {
    order.push_back(d);
    len *= x.shape()[static_cast<size_t>(d)];
    l.keep_shape[static_cast<size_t>(d)] = 1;
  }
  NoGradGuard no_grad;
  const Tensor in = ops::kernel_input(x);
  const auto run = reduced_run(x.shape(), x.dim() ? dims : std::vector<int64_t>{});
  if (in.is_contiguous() && run && ((*run)[2] == 1 || allow_inner)) {
    l.data = in;
    l.outer = (*run)[0];
    l.len = (*run)[1];
    l.inner = (*run)[2];
    return l;
  }
  l.data = contiguous(x.dim() ? permute(in, order) : in);
  l.outer = numel_of(l.out_shape);
  l.len = len;
  return l;
}

Tensor reduce(cpu::RowReduce op, const ReduceLayout& l, DType out_dtype, const char* name) {
  const ProfileScope scope(name);
  const DType dt = op == cpu::RowReduce::ArgMax ? DType::I64 : l.data.dtype();
  Tensor out = Tensor::empty(l.out_shape, dt, l.data.device());
  const Device dev = l.data.device();
  if (l.inner == 1) {
    const cpu::RowReduceParams p{l.data.raw_data(), out.raw_data(), l.data.dtype(), l.outer, l.len};
    LN_ON_DEVICE(dev, cpu::reduce_rows(op, p), cuda::reduce_rows(dev.index, op, p));
  } else {
    LN_CHECK(op == cpu::RowReduce::Sum, "[", name, "] only sums reduce dims that kept dims follow in place");
    const cpu::ColumnSumParams p{l.data.raw_data(), out.raw_data(), l.data.dtype(), l.outer, l.len, l.inner};
    LN_ON_DEVICE(dev, cpu::sum_columns(p), cuda::sum_columns(dev.index, p));
  }
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
  const ReduceLayout l = to_layout(x, dims, true);
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
  const ReduceLayout l = to_layout(x, dims, true);
  const int64_t count = l.len;
  LN_CHECK(count > 0, "[mean] reducing over an empty dim of shape ", shape_str(x.shape()));
  Tensor out;
  {
    NoGradGuard no_grad;
    out = cast(mul(reduce(cpu::RowReduce::Sum, l, l.data.dtype(), "mean"), 1.0 / static_cast<double>(count)),
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
  const ReduceLayout l = to_layout(x, {dim}, false);
  LN_CHECK(l.len > 0, "[argmax] empty dim ", dim, " of shape ", shape_str(x.shape()));
  Tensor out = reduce(cpu::RowReduce::ArgMax, l, DType::I64, "argmax");
  return keepdim ? reshape(out, l.keep_shape) : out;
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
  dim = wrap_dim(dim, x.dim(), "max");
  const ReduceLayout l = to_layout(x, {dim}, false);
  LN_CHECK(l.len > 0, "[max] empty dim ", dim, " of shape ", shape_str(x.shape()));
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
  const ReduceLayout l = to_layout(x, dims, false);
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
