#include "framework/ops/softmax.h"

#include <algorithm>
#include <utility>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/softmax.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/softmax.h"
#endif
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

const char* op_name(bool log) { return log ? "log_softmax" : "softmax"; }

// `t` with `dim` swapped to the last place, contiguous, in the dtype its device computes in (GPU
// kernels take 16-bit floats as they are); not recorded. A scalar is one slice of length 1.
// Swapping (rather than a general permute) is its own inverse, so from_rows undoes it the same way.
Tensor to_rows(const Tensor& t, int64_t dim) {
  NoGradGuard no_grad;
  const Tensor t1 = t.dim() ? t : reshape(t, {1});
  const Tensor up = ops::kernel_input(t1);
  const int64_t last = up.dim() - 1;
  return (dim == last ? up : transpose(up, dim, last)).contiguous();
}

// Undoes to_rows: back to the layout and dtype of `like`.
Tensor from_rows(const Tensor& rows, int64_t dim, const Tensor& like) {
  NoGradGuard no_grad;
  const int64_t last = rows.dim() - 1;
  const Tensor back = dim == last ? rows : transpose(rows, dim, last).contiguous();
  return cast(like.dim() ? back : reshape(back, {}), like.dtype());
}

// Number of rows and row length of a to_rows result.
std::pair<int64_t, int64_t> row_geometry(const Tensor& rows) {
  const int64_t len = rows.size(-1);
  return {len ? rows.numel() / len : 0, len};
}

void run_forward(const char* name, const cpu::SoftmaxParams& p, Device device) {
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) return cuda::softmax_rows(device.index, p);
#endif
  LN_CHECK(device.is_cpu(), "[", name, "] has no kernel for ", device.str(), " tensors");
  cpu::softmax_rows(p);
}

void run_backward(const char* name, const cpu::SoftmaxBackwardParams& p, Device device) {
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) return cuda::softmax_backward_rows(device.index, p);
#endif
  LN_CHECK(device.is_cpu(), "[", name, "] has no kernel for ", device.str(), " tensors");
  cpu::softmax_backward_rows(p);
}

class SoftmaxBackward final : public autograd::Node {
 public:
  SoftmaxBackward(Tensor y, int64_t dim, bool log) : y_(std::move(y)), dim_(dim), log_(log) {}
  std::string name() const override { return log_ ? "LogSoftmaxBackward" : "SoftmaxBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    const Tensor y = to_rows(y_, dim_), dy = cast(to_rows(g[0], dim_), y.dtype());
    Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
    const auto [rows, len] = row_geometry(y);
    run_backward(op_name(log_), {y.raw_data(), dy.raw_data(), dx.raw_data(), y.dtype(), rows, len, log_},
                 y.device());
    return {from_rows(dx, dim_, y_)};
  }
  std::vector<Tensor> saved_tensors() const override { return {y_}; }
  void release_saved() override { y_ = Tensor(); }

 private:
  Tensor y_;
  int64_t dim_;
  bool log_;
};

Tensor softmax_op(const Tensor& x, int64_t dim, bool log) {
  const char* name = op_name(log);
  const ProfileScope scope(name);
  ops::require_float(name, x);
  dim = wrap_dim(dim, std::max<int64_t>(x.dim(), 1), name);
  const Tensor rows = to_rows(x, dim);
  Tensor y_rows = Tensor::empty(rows.shape(), rows.dtype(), rows.device());
  const auto [n, len] = row_geometry(rows);
  run_forward(name, {rows.raw_data(), y_rows.raw_data(), rows.dtype(), n, len, log}, rows.device());
  Tensor y = from_rows(y_rows, dim, x);
  if (autograd::needs_grad({x})) {
    autograd::record(std::make_shared<SoftmaxBackward>(y.detach(), dim, log), {x}, {y});
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_op(x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return softmax_op(x, dim, true); }

}  // namespace longnet
