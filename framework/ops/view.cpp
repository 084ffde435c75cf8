#include "framework/ops/view.h"

#include <algorithm>
#include <numeric>
#include <optional>

#include "framework/autograd/node.h"
#include "framework/ops/copy.h"
#include "framework/ops/factory.h"
#include "framework/ops/reduce.h"

namespace longnet {
namespace {

Tensor make_view(const Tensor& t, Shape shape, Strides strides, int64_t offset) {
  return Tensor::from_storage(t.storage(), offset, std::move(shape), std::move(strides), t.dtype());
}

class ReshapeBackward final : public autograd::Node {
 public:
  explicit ReshapeBackward(Shape in) : in_(std::move(in)) {}
  std::string name() const override { return "ReshapeBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {reshape(g[0], in_)}; }

 private:
  Shape in_;
};

class PermuteBackward final : public autograd::Node {
 public:
  explicit PermuteBackward(std::vector<int64_t> inverse) : inverse_(std::move(inverse)) {}
  std::string name() const override { return "PermuteBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {permute(g[0], inverse_)}; }

 private:
  std::vector<int64_t> inverse_;
};

class SliceBackward final : public autograd::Node {
 public:
  SliceBackward(Shape in, int64_t dim, int64_t start, int64_t end, int64_t step)
      : in_(std::move(in)), dim_(dim), start_(start), end_(end), step_(step) {}
  std::string name() const override { return "SliceBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    Tensor full_grad = zeros(in_, g[0].dtype(), g[0].device());
    copy_(slice(full_grad, dim_, start_, end_, step_), g[0]);
    return {full_grad};
  }

 private:
  Shape in_;
  int64_t dim_, start_, end_, step_;
};

class ExpandBackward final : public autograd::Node {
 public:
  explicit ExpandBackward(Shape in) : in_(std::move(in)) {}
  std::string name() const override { return "ExpandBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {sum_to(g[0], in_)}; }

 private:
  Shape in_;
};

class CloneBackward final : public autograd::Node {
 public:
  std::string name() const override { return "CloneBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {g[0]}; }
};

// Fills in one -1 size and checks the element count.
Shape infer_shape(const Shape& in, Shape shape, const char* op) {
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      LN_CHECK(infer < 0, "[", op, "] only one size may be -1 in ", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      LN_CHECK(shape[i] >= 0, "[", op, "] negative size in ", shape_str(shape));
      known *= shape[i];
    }
  }
  const int64_t n = numel_of(in);
  if (infer >= 0) {
    LN_CHECK(known != 0 && n % known == 0, "[", op, "] cannot reshape ", shape_str(in), " to ",
             shape_str(shape));
    shape[static_cast<size_t>(infer)] = n / known;
  }
  LN_CHECK(numel_of(shape) == n, "[", op, "] cannot reshape ", shape_str(in), " (", n,
           " elements) to ", shape_str(shape));
  return shape;
}

// Strides for viewing `t` with `shape` without copying, or nullopt when the layout forbids it.
// Old dims are walked from the innermost outwards in chunks that are contiguous among themselves;
// each chunk must be covered exactly by a run of new dims, which then stride within the chunk.
std::optional<Strides> view_strides(const Tensor& t, const Shape& shape) {
  const Shape& old = t.shape();
  const Strides& os = t.strides();
  if (numel_of(old) == 0 || old.empty()) return contiguous_strides(shape);
  Strides st(shape.size(), 1);
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_stride = os.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(old.size()) - 1; d >= 0; --d) {
    tensor_numel *= old[static_cast<size_t>(d)];
    const bool chunk_ends =
        d == 0 || (old[static_cast<size_t>(d - 1)] != 1 &&
                   os[static_cast<size_t>(d - 1)] != tensor_numel * chunk_stride);
    if (!chunk_ends) continue;
    while (view_d >= 0 && (view_numel < tensor_numel || shape[static_cast<size_t>(view_d)] == 1)) {
      st[static_cast<size_t>(view_d)] = view_numel * chunk_stride;
      view_numel *= shape[static_cast<size_t>(view_d)];
      --view_d;
    }
    if (view_numel != tensor_numel) return std::nullopt;
    if (d > 0) {
      chunk_stride = os[static_cast<size_t>(d - 1)];
      tensor_numel = 1;
      view_numel = 1;
    }
  }
  if (view_d != -1) return std::nullopt;
  return st;
}

}  // namespace

Tensor view(const Tensor& t, const Shape& shape_in) {
  Shape shape = infer_shape(t.shape(), shape_in, "view");
  std::optional<Strides> st = view_strides(t, shape);
  LN_CHECK(st.has_value(), "[view] cannot view a tensor of shape ", shape_str(t.shape()),
           " with strides ", shape_str(t.strides()), " as ", shape_str(shape),
           " without copying; use reshape");
  Tensor out = make_view(t, shape, *st, t.offset());
  if (autograd::needs_grad({t})) {
    autograd::record(std::make_shared<ReshapeBackward>(t.shape()), {t}, {out});
  }
  return out;
}

Tensor reshape(const Tensor& t, const Shape& shape_in) {
  Shape shape = infer_shape(t.shape(), shape_in, "reshape");
  if (view_strides(t, shape).has_value()) return view(t, shape);
  return view(clone(t), shape);
}

Tensor permute(const Tensor& t, const std::vector<int64_t>& dims) {
  const int64_t nd = t.dim();
  LN_CHECK(static_cast<int64_t>(dims.size()) == nd, "[permute] ", dims.size(),
           " dims given for a tensor of shape ", shape_str(t.shape()));
  std::vector<int64_t> wrapped(dims.size()), inverse(dims.size());
  std::vector<bool> used(dims.size(), false);
  Shape shape(dims.size());
  Strides st(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], nd, "permute");
    LN_CHECK(!used[static_cast<size_t>(d)], "[permute] dim ", d, " repeated");
    used[static_cast<size_t>(d)] = true;
    wrapped[i] = d;
    inverse[static_cast<size_t>(d)] = static_cast<int64_t>(i);
    shape[i] = t.shape()[static_cast<size_t>(d)];
    st[i] = t.strides()[static_cast<size_t>(d)];
  }
  Tensor out = make_view(t, shape, st, t.offset());
  if (autograd::needs_grad({t})) autograd::record(std::make_shared<PermuteBackward>(inverse), {t}, {out});
  return out;
}

Tensor transpose(const Tensor& t, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(static_cast<size_t>(t.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[static_cast<size_t>(wrap_dim(d0, t.dim(), "transpose"))],
            dims[static_cast<size_t>(wrap_dim(d1, t.dim(), "transpose"))]);
  return permute(t, dims);
}

Tensor slice(const Tensor& t, int64_t dim, int64_t start, int64_t end, int64_t step) {
  dim = wrap_dim(dim, t.dim(), "slice");
  LN_CHECK(step > 0, "[slice] step must be positive, got ", step);
  const int64_t n = t.shape()[static_cast<size_t>(dim)];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = t.shape();
  Strides st = t.strides();
  shape[static_cast<size_t>(dim)] = (end - start + step - 1) / step;
  st[static_cast<size_t>(dim)] *= step;
  Tensor out = make_view(t, shape, st, t.offset() + start * t.strides()[static_cast<size_t>(dim)]);
  if (autograd::needs_grad({t})) {
    autograd::record(std::make_shared<SliceBackward>(t.shape(), dim, start, end, step), {t}, {out});
  }
  return out;
}

Tensor narrow(const Tensor& t, int64_t dim, int64_t start, int64_t length) {
  const int64_t d = wrap_dim(dim, t.dim(), "narrow");
  const int64_t n = t.shape()[static_cast<size_t>(d)];
  LN_CHECK(start >= 0 && length >= 0 && start + length <= n, "[narrow] range [", start, ", ",
           start + length, ") out of bounds for dim ", d, " of shape ", shape_str(t.shape()));
  return slice(t, d, start, start + length, 1);
}

Tensor expand(const Tensor& t, const Shape& shape_in) {
  LN_CHECK(shape_in.size() >= t.shape().size(), "[expand] cannot expand ", shape_str(t.shape()),
           " to fewer dims ", shape_str(shape_in));
  const size_t lead = shape_in.size() - t.shape().size();
  Shape shape = shape_in;
  Strides st(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      LN_CHECK(shape[i] >= 0, "[expand] -1 is not allowed for a new leading dim in ",
               shape_str(shape_in));
      continue;
    }
    const int64_t cur = t.shape()[i - lead];
    if (shape[i] == -1) shape[i] = cur;
    LN_CHECK(cur == shape[i] || cur == 1, "[expand] cannot expand ", shape_str(t.shape()), " to ",
             shape_str(shape_in));
    st[i] = cur == shape[i] ? t.strides()[i - lead] : 0;
  }
  if (shape == t.shape()) return t;
  Tensor out = make_view(t, shape, st, t.offset());
  if (autograd::needs_grad({t})) autograd::record(std::make_shared<ExpandBackward>(t.shape()), {t}, {out});
  return out;
}

Tensor squeeze(const Tensor& t, int64_t dim) {
  dim = wrap_dim(dim, t.dim(), "squeeze");
  LN_CHECK(t.shape()[static_cast<size_t>(dim)] == 1, "[squeeze] dim ", dim, " of shape ",
           shape_str(t.shape()), " is not 1");
  Shape shape = t.shape();
  shape.erase(shape.begin() + dim);
  return view(t, shape);
}

Tensor unsqueeze(const Tensor& t, int64_t dim) {
  dim = wrap_dim(dim, t.dim() + 1, "unsqueeze");
  Shape shape = t.shape();
  shape.insert(shape.begin() + dim, 1);
  return view(t, shape);
}

Tensor flatten(const Tensor& t, int64_t start_dim, int64_t end_dim) {
  if (t.dim() == 0) return reshape(t, {1});
  start_dim = wrap_dim(start_dim, t.dim(), "flatten");
  end_dim = wrap_dim(end_dim, t.dim(), "flatten");
  LN_CHECK(start_dim <= end_dim, "[flatten] start_dim ", start_dim, " after end_dim ", end_dim);
  Shape shape(t.shape().begin(), t.shape().begin() + start_dim);
  int64_t merged = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) merged *= t.shape()[static_cast<size_t>(d)];
  shape.push_back(merged);
  shape.insert(shape.end(), t.shape().begin() + end_dim + 1, t.shape().end());
  return reshape(t, shape);
}

Tensor clone(const Tensor& t) {
  Tensor out = Tensor::empty(t.shape(), t.dtype(), t.device());
  copy_(out, t);
  if (autograd::needs_grad({t})) autograd::record(std::make_shared<CloneBackward>(), {t}, {out});
  return out;
}

Tensor contiguous(const Tensor& t) { return t.is_contiguous() ? t : clone(t); }

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const size_t lead = grad.shape().size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t i = 0; i < grad.shape().size(); ++i) {
    if (i < lead || (shape[i - lead] == 1 && grad.shape()[i] != 1)) dims.push_back(static_cast<int64_t>(i));
  }
  Tensor s = sum(grad, dims, true);
  return reshape(s, shape);
}

}  // namespace longnet
