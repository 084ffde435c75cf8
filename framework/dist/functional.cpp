#include "framework/dist/functional.h"

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/error.h"
#include "framework/ops/ops.h"

namespace longnet::dist {
namespace {

/// dim moved to the front of a contiguous copy.
Tensor front(const Tensor& x, int64_t dim) {
  return dim == 0 ? x.contiguous() : x.transpose(0, dim).contiguous();
}
Tensor unfront(const Tensor& x, int64_t dim) { return dim == 0 ? x : x.transpose(0, dim); }

int64_t wrap_dim(const Tensor& x, int64_t dim, const char* op) {
  const int64_t d = dim < 0 ? dim + x.dim() : dim;
  LN_CHECK(d >= 0 && d < x.dim(), "[", op, "] dim ", dim, " out of range for shape ", shape_str(x.shape()));
  return d;
}

/// Not recorded: the gather of a contiguous dim-0 split.
Tensor gather0(const Tensor& x, Communicator& comm) {
  Shape shape = x.shape();
  shape[0] *= comm.size();
  Tensor out = Tensor::empty(shape, x.dtype(), x.device());
  comm.all_gather(x, out);
  return out;
}

Tensor reduce_scatter0(const Tensor& g, Communicator& comm) {
  Shape shape = g.shape();
  shape[0] /= comm.size();
  Tensor out = Tensor::empty(shape, g.dtype(), g.device());
  comm.reduce_scatter(g, out, ReduceOp::Sum);
  return out;
}

/// Not recorded: x (P * m, ...) with piece j for rank j, to rank i's pieces at rows i*m...
Tensor exchange0(const Tensor& x, Communicator& comm) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  comm.all_to_all(x, out);
  return out;
}

/// Not recorded: the all-to-all between arbitrary dims.
Tensor exchange(const Tensor& x, int64_t split_dim, int64_t cat_dim, Communicator& comm) {
  const int p = comm.size();
  LN_CHECK(x.size(split_dim) % p == 0, "[all_to_all_dim] dim ", split_dim, " of shape ", shape_str(x.shape()),
           " does not split into ", p, " ranks");
  // (P, ...) with the split dim's pieces first, so that piece j is contiguous rows of the buffer.
  Shape pieces = x.shape();
  pieces[split_dim] /= p;
  pieces.insert(pieces.begin() + split_dim, p);
  Tensor send = front(x.reshape(pieces), split_dim);
  Tensor got = exchange0(send, comm);  // (P, ...): piece i came from rank i
  // Move the rank index next to cat_dim (cat_dim + 1 in `pieces` order if it lies after split_dim).
  const int64_t target = cat_dim < split_dim ? cat_dim : cat_dim + 1;
  std::vector<int64_t> order;
  Shape back = pieces;  // the geometry `got` has after undoing the front transpose
  Tensor restored = unfront(got, split_dim);  // rank index at split_dim again
  for (int64_t d = 0; d < restored.dim(); ++d) {
    if (d == split_dim) continue;
    if (d == target) order.push_back(split_dim);
    order.push_back(d);
  }
  if (target == restored.dim()) order.push_back(split_dim);
  Tensor moved = restored.permute(order);
  Shape out_shape = x.shape();
  out_shape[split_dim] /= p;
  out_shape[cat_dim] *= p;
  return moved.reshape(out_shape);
}

class AllGatherBackward final : public autograd::Node {
 public:
  AllGatherBackward(int64_t dim, Communicator& comm) : dim_(dim), comm_(comm) {}
  std::string name() const override { return "AllGatherBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    return {unfront(reduce_scatter0(front(g[0], dim_), comm_), dim_)};
  }

 private:
  int64_t dim_;
  Communicator& comm_;
};

class AllToAllBackward final : public autograd::Node {
 public:
  AllToAllBackward(int64_t split_dim, int64_t cat_dim, Communicator& comm)
      : split_dim_(split_dim), cat_dim_(cat_dim), comm_(comm) {}
  std::string name() const override { return "AllToAllBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {exchange(g[0], cat_dim_, split_dim_, comm_)}; }

 private:
  int64_t split_dim_, cat_dim_;
  Communicator& comm_;
};

}  // namespace

Tensor all_gather_dim(const Tensor& x, int64_t dim, Communicator& comm) {
  const int64_t d = wrap_dim(x, dim, "all_gather_dim");
  Tensor out;
  {
    NoGradGuard no_grad;
    out = unfront(gather0(front(x, d), comm), d).contiguous();
  }
  if (autograd::needs_grad({x})) autograd::record(std::make_shared<AllGatherBackward>(d, comm), {x}, {out});
  return out;
}

Tensor all_to_all_dim(const Tensor& x, int64_t split_dim, int64_t cat_dim, Communicator& comm) {
  const int64_t s = wrap_dim(x, split_dim, "all_to_all_dim");
  const int64_t c = wrap_dim(x, cat_dim, "all_to_all_dim");
  LN_CHECK(s != c, "[all_to_all_dim] split and concatenation dims must differ, both are ", s);
  Tensor out;
  {
    NoGradGuard no_grad;
    out = exchange(x, s, c, comm).contiguous();
  }
  if (autograd::needs_grad({x})) autograd::record(std::make_shared<AllToAllBackward>(s, c, comm), {x}, {out});
  return out;
}

}  // namespace longnet::dist
