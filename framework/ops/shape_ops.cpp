#include "framework/ops/shape_ops.h"

#include <sstream>

#include "framework/autograd/node.h"
#include "framework/ops/copy.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

// "(2, 3), (2, 4)" for error messages.
std::string shapes_str(const std::vector<Tensor>& tensors) {
  std::ostringstream s;
  for (size_t i = 0; i < tensors.size(); ++i) s << (i ? ", " : "") << shape_str(tensors[i].shape());
  return s.str();
}

class CatBackward final : public autograd::Node {
 public:
  CatBackward(int64_t dim, std::vector<int64_t> sizes) : dim_(dim), sizes_(std::move(sizes)) {}
  std::string name() const override { return "CatBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    std::vector<Tensor> out(sizes_.size());
    int64_t start = 0;
    for (size_t i = 0; i < sizes_.size(); ++i) {
      if (next_edges[i].fn) out[i] = narrow(g[0], dim_, start, sizes_[i]);
      start += sizes_[i];
    }
    return out;
  }

 private:
  int64_t dim_;
  std::vector<int64_t> sizes_;
};

}  // namespace

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  LN_CHECK(!tensors.empty(), "[cat] empty list of tensors");
  for (const Tensor& t : tensors) LN_CHECK(t.defined(), "[cat] undefined tensor in the list");
  const Tensor& first = tensors[0];
  LN_CHECK(first.dim() > 0, "[cat] cannot concatenate 0-d tensors (use stack): ", shapes_str(tensors));
  dim = wrap_dim(dim, first.dim(), "cat");
  Shape shape = first.shape();
  shape[static_cast<size_t>(dim)] = 0;
  std::vector<int64_t> sizes;
  for (const Tensor& t : tensors) {
    LN_CHECK(t.dtype() == first.dtype(), "[cat] dtype mismatch: ", dtype_name(first.dtype()), " vs ",
             dtype_name(t.dtype()), " in ", shapes_str(tensors));
    LN_CHECK(t.device() == first.device(), "[cat] tensors on different devices: ", first.device().str(),
             " and ", t.device().str(), " in ", shapes_str(tensors));
    bool same = t.dim() == first.dim();
    for (int64_t d = 0; same && d < t.dim(); ++d) same = d == dim || t.size(d) == first.size(d);
    LN_CHECK(same, "[cat] sizes must match off dim ", dim, ": ", shapes_str(tensors));
    sizes.push_back(t.size(dim));
    shape[static_cast<size_t>(dim)] += t.size(dim);
  }
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  int64_t start = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    copy_(narrow(out, dim, start, sizes[i]), tensors[i]);
    start += sizes[i];
  }
  if (autograd::needs_grad(tensors)) {
    autograd::record(std::make_shared<CatBackward>(dim, std::move(sizes)), tensors, {out});
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  LN_CHECK(!tensors.empty(), "[stack] empty list of tensors");
  for (const Tensor& t : tensors) {
    LN_CHECK(t.defined(), "[stack] undefined tensor in the list");
    LN_CHECK(t.shape() == tensors[0].shape(), "[stack] all shapes must be equal: ", shapes_str(tensors));
  }
  dim = wrap_dim(dim, tensors[0].dim() + 1, "stack");
  std::vector<Tensor> expanded;
  expanded.reserve(tensors.size());
  for (const Tensor& t : tensors) expanded.push_back(unsqueeze(t, dim));
  return cat(expanded, dim);
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  dim = wrap_dim(dim, x.dim(), "split");
  LN_CHECK(split_size > 0, "[split] split_size must be positive, got ", split_size, " for shape ",
           shape_str(x.shape()));
  const int64_t n = x.size(dim);
  std::vector<int64_t> sizes;
  for (int64_t start = 0; start < n; start += split_size) sizes.push_back(std::min(split_size, n - start));
  if (sizes.empty()) sizes.push_back(0);  // an empty dim still yields one (empty) piece
  return split(x, sizes, dim);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  dim = wrap_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    LN_CHECK(s >= 0, "[split] negative size ", s, " in ", shape_str(sizes));
    total += s;
  }
  LN_CHECK(total == x.size(dim), "[split] sizes ", shape_str(sizes), " sum to ", total, ", not to size ",
           x.size(dim), " of dim ", dim, " of shape ", shape_str(x.shape()));
  std::vector<Tensor> pieces;
  int64_t start = 0;
  for (int64_t s : sizes) {
    pieces.push_back(narrow(x, dim, start, s));
    start += s;
  }
  return pieces;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  dim = wrap_dim(dim, x.dim(), "chunk");
  LN_CHECK(chunks > 0, "[chunk] chunks must be positive, got ", chunks, " for shape ", shape_str(x.shape()));
  const int64_t n = x.size(dim), base = n / chunks, extra = n % chunks;
  std::vector<int64_t> sizes;
  for (int64_t i = 0; i < chunks; ++i) sizes.push_back(base + (i < extra ? 1 : 0));
  return split(x, sizes, dim);
}

}  // namespace longnet
