#include "framework/ops/index.h"

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/cpu/index.h"
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/factory.h"
#include "framework/ops/view.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/index.h"
#endif

namespace longnet {

namespace ops {

std::optional<int64_t> first_out_of_range(const Tensor& ids, int64_t limit) {
  if (ids.device().is_cuda()) {
#ifdef LONGNET_WITH_CUDA
    return cuda::first_out_of_range(ids.device().index, ids.raw_data(), ids.dtype(), ids.numel(), limit);
#endif
  }
  return cpu::first_out_of_range(ids.raw_data(), ids.dtype(), ids.numel(), limit);
}

}  // namespace ops

namespace {

cpu::StridedOperand operand(const Tensor& t, const Strides& strides) {
  return {t.raw_data(), t.dtype(), strides.data()};
}

// The index as a contiguous i32/i64 tensor whose ids all lie in [0, x.size(dim)).
Tensor checked_index(const char* op, const Tensor& x, int64_t dim, const Tensor& index) {
  LN_CHECK(index.dtype() == DType::I32 || index.dtype() == DType::I64, "[", op,
           "] index must be i32 or i64, got ", dtype_name(index.dtype()), " of shape ",
           shape_str(index.shape()));
  const int64_t limit = x.size(dim);
  Tensor idx = index.contiguous();
  // On a GPU this waits for the device: the range check comes back with one small copy.
  const std::optional<int64_t> bad = ops::first_out_of_range(idx, limit);
  LN_CHECK(!bad, "[", op, "] index ", bad.value_or(0), " out of range for dim ", dim, " of size ", limit,
           " (input ", shape_str(x.shape()), ", index ", shape_str(index.shape()), ")");
  return idx;
}

// Strides that read a 1-D index along `dim` of an `ndim`-dim loop (0 on every other dim).
Strides select_strides(const Tensor& idx, int64_t ndim, int64_t dim) {
  Strides st(static_cast<size_t>(ndim), 0);
  st[static_cast<size_t>(dim)] = idx.stride(0);
  return st;
}

// A contiguous tensor of the loop shape (x's dtype) holding x read at the index along dim.
Tensor run_gather(const Tensor& x, int64_t dim, const Tensor& idx, const Strides& idx_strides,
                  const Shape& loop) {
  Tensor out = Tensor::empty(loop, x.dtype(), x.device());
  const cpu::IndexParams p{loop, dim, operand(out, out.strides()), operand(x, x.strides()),
                           operand(idx, idx_strides)};
  if (x.device().is_cuda()) {
#ifdef LONGNET_WITH_CUDA
    cuda::gather(x.device().index, p);
#endif
  } else {
    cpu::gather(p);
  }
  return out;
}

// dst += src scattered at the index along dim, over the loop shape. dst is f32 or f64 (the
// accumulator); src has dst's dtype or is a 16-bit float with an f32 dst, which the CPU kernel
// gets upcast and the GPU kernel reads as it is.
void run_scatter_add(const Tensor& dst, int64_t dim, const Tensor& idx, const Strides& idx_strides,
                     const Tensor& src, const Shape& loop) {
  const Tensor s = ops::kernel_input(src);
  const cpu::IndexParams p{loop, dim, operand(dst, dst.strides()), operand(s, s.strides()),
                           operand(idx, idx_strides)};
  if (dst.device().is_cuda()) {
#ifdef LONGNET_WITH_CUDA
    cuda::scatter_add(dst.device().index, p);
#endif
  } else {
    cpu::scatter_add(p);
  }
}

// The gradient of reading a tensor of `shape` at the index: g scattered into zeros, accumulated
// in f32 for 16-bit gradients.
Tensor scatter_into_zeros(const Shape& shape, DType dtype, int64_t dim, const Tensor& idx,
                          const Strides& idx_strides, const Tensor& g) {
  Tensor out = zeros(shape, ops::cpu_compute_dtype(g.dtype()), g.device());
  run_scatter_add(out, dim, idx, idx_strides, g, g.shape());
  return cast(out, dtype);
}

// Backward of index_select and gather: both read x at the index, so both scatter g back.
class IndexReadBackward final : public autograd::Node {
 public:
  IndexReadBackward(const char* op, Shape in, DType dtype, int64_t dim, Tensor idx, bool select)
      : op_(op), in_(std::move(in)), dtype_(dtype), dim_(dim), idx_(std::move(idx)), select_(select) {}
  std::string name() const override { return std::string(op_) + "Backward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    const Strides st =
        select_ ? select_strides(idx_, static_cast<int64_t>(in_.size()), dim_) : idx_.strides();
    return {scatter_into_zeros(in_, dtype_, dim_, idx_, st, g[0]), Tensor()};
  }
  std::vector<Tensor> saved_tensors() const override { return {idx_}; }
  void release_saved() override { idx_ = Tensor(); }

 private:
  const char* op_;
  Shape in_;
  DType dtype_;
  int64_t dim_;
  Tensor idx_;   // contiguous
  bool select_;  // a 1-D index_select index rather than a gather index of the output's shape
};

class ScatterAddBackward final : public autograd::Node {
 public:
  ScatterAddBackward(int64_t dim, Tensor idx, Shape src)
      : dim_(dim), idx_(std::move(idx)), src_(std::move(src)) {}
  std::string name() const override { return "ScatterAddBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    Tensor gsrc;
    if (next_edges[2].fn) {
      Tensor picked = run_gather(g[0], dim_, idx_, idx_.strides(), idx_.shape());
      if (idx_.shape() == src_) {
        gsrc = picked;
      } else {  // src entries beyond the index's extent were never read
        gsrc = zeros(src_, picked.dtype(), picked.device());
        Tensor region = gsrc;
        for (int64_t d = 0; d < idx_.dim(); ++d) region = narrow(region, d, 0, idx_.size(d));
        copy_(region, picked);
      }
    }
    return {g[0], Tensor(), gsrc};
  }
  std::vector<Tensor> saved_tensors() const override { return {idx_}; }
  void release_saved() override { idx_ = Tensor(); }

 private:
  int64_t dim_;
  Tensor idx_;  // contiguous
  Shape src_;
};

}  // namespace

Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index) {
  ops::common_device("index_select", {x, index});
  dim = wrap_dim(dim, x.dim(), "index_select");
  LN_CHECK(index.dim() == 1, "[index_select] index must be 1-D, got shape ", shape_str(index.shape()),
           " (input ", shape_str(x.shape()), ")");
  const Tensor idx = checked_index("index_select", x, dim, index);
  Shape loop = x.shape();
  loop[static_cast<size_t>(dim)] = idx.numel();
  Tensor out = run_gather(x, dim, idx, select_strides(idx, x.dim(), dim), loop);
  if (autograd::needs_grad({x})) {
    autograd::record(
        std::make_shared<IndexReadBackward>("IndexSelect", x.shape(), x.dtype(), dim, idx.detach(), true),
        {x, index}, {out});
  }
  return out;
}

Tensor gather(const Tensor& x, int64_t dim, const Tensor& index) {
  ops::common_device("gather", {x, index});
  dim = wrap_dim(dim, x.dim(), "gather");
  LN_CHECK(index.dim() == x.dim(), "[gather] index ", shape_str(index.shape()),
           " must have as many dims as the input ", shape_str(x.shape()));
  for (int64_t d = 0; d < x.dim(); ++d) {
    LN_CHECK(d == dim || index.size(d) <= x.size(d), "[gather] index ", shape_str(index.shape()),
             " is larger than the input ", shape_str(x.shape()), " in dim ", d);
  }
  const Tensor idx = checked_index("gather", x, dim, index);
  Tensor out = run_gather(x, dim, idx, idx.strides(), idx.shape());
  if (autograd::needs_grad({x})) {
    autograd::record(
        std::make_shared<IndexReadBackward>("Gather", x.shape(), x.dtype(), dim, idx.detach(), false),
        {x, index}, {out});
  }
  return out;
}

Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src) {
  ops::common_device("scatter_add", {x, index, src});
  ops::require_float("scatter_add", x);
  ops::require_same_dtype("scatter_add", x, src);
  dim = wrap_dim(dim, x.dim(), "scatter_add");
  LN_CHECK(index.dim() == x.dim() && src.dim() == x.dim(), "[scatter_add] input ", shape_str(x.shape()),
           ", index ", shape_str(index.shape()), " and src ", shape_str(src.shape()),
           " must have the same number of dims");
  for (int64_t d = 0; d < x.dim(); ++d) {
    LN_CHECK(index.size(d) <= src.size(d) && (d == dim || index.size(d) <= x.size(d)), "[scatter_add] index ",
             shape_str(index.shape()), " is larger than src ", shape_str(src.shape()), " or input ",
             shape_str(x.shape()), " in dim ", d);
  }
  const Tensor idx = checked_index("scatter_add", x, dim, index);
  Tensor out;
  {
    NoGradGuard no_grad;
    // 16-bit inputs accumulate in an f32 copy of x on every device.
    out = clone(ops::upcast_for_cpu(x));
    run_scatter_add(out, dim, idx, idx.strides(), src, idx.shape());
    out = cast(out, x.dtype());
  }
  if (autograd::needs_grad({x, src})) {
    autograd::record(std::make_shared<ScatterAddBackward>(dim, idx.detach(), src.shape()), {x, index, src},
                     {out});
  }
  return out;
}

}  // namespace longnet
