#include "framework/ops/norm.h"

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/norm.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/norm.h"
#endif
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

// `t` (..., len) as a contiguous (rows, len) block in `dtype`; not recorded.
Tensor as_rows(const Tensor& t, int64_t len, DType dtype) {
  return reshape(cast(t, dtype).contiguous(), {len ? t.numel() / len : 0, len});
}

// A weight or bias in the compute dtype, contiguous; undefined stays undefined.
Tensor param_as(const Tensor& p, DType dtype) { return p.defined() ? cast(p, dtype).contiguous() : Tensor(); }

// The dtype of the saved mean / rstd: the compute dtype on the CPU, f32 (f64 for f64) on the GPU.
DType stats_dtype(DType compute) { return compute == DType::F64 ? DType::F64 : DType::F32; }

void* ptr(const Tensor& t) { return t.defined() ? t.raw_data() : nullptr; }

void run_forward(const char* op, const cpu::NormParams& p, Device device) {
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) return cuda::norm_forward(device.index, p);
#endif
  LN_CHECK(device.is_cpu(), "[", op, "] has no kernel for ", device.str(), " tensors");
  cpu::norm_forward(p);
}

void run_backward(const char* op, const cpu::NormBackwardParams& p, Device device) {
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) return cuda::norm_backward(device.index, p);
#endif
  LN_CHECK(device.is_cpu(), "[", op, "] has no kernel for ", device.str(), " tensors");
  cpu::norm_backward(p);
}

class NormBackward final : public autograd::Node {
 public:
  NormBackward(Tensor x, Tensor weight, Tensor mean, Tensor rstd, bool rms, bool gelu)
      : x_(std::move(x)), weight_(std::move(weight)), mean_(std::move(mean)), rstd_(std::move(rstd)), rms_(rms),
        gelu_(gelu) {}
  std::string name() const override {
    return std::string(gelu_ ? "Gelu" : "") + (rms_ ? "RmsNormBackward" : "LayerNormBackward");
  }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    const DType dt = ops::kernel_dtype(x_);
    const int64_t len = x_.size(-1);
    const Tensor x = as_rows(x_, len, dt), dy = as_rows(g[0], len, dt);
    const Tensor w = param_as(weight_, dt);
    const bool need_x = next_edges[0].fn != nullptr;
    const bool need_w = next_edges[1].fn != nullptr;
    const bool need_b = !rms_ && next_edges[2].fn != nullptr;
    // x's gradient so far (the residual stream's, from the skip), when the engine offers it in
    // the kernel's dtype, takes dx in place: the kernel adds it as it writes.
    const Tensor sink = need_x && dt == x_.dtype() ? grad_sink(0, x_.shape(), dt) : Tensor();
    Tensor dx = sink.defined() ? reshape(sink, x.shape())
                               : need_x ? Tensor::empty(x.shape(), dt, x.device()) : Tensor();
    Tensor dw = need_w ? Tensor::empty({len}, dt, x.device()) : Tensor();
    Tensor db = need_b ? Tensor::empty({len}, dt, x.device()) : Tensor();
    run_backward(rms_ ? "rms_norm" : "layer_norm",
                 {x.raw_data(), ptr(w), ptr(mean_), rstd_.raw_data(), dy.raw_data(), ptr(dx), ptr(sink), ptr(dw),
                  ptr(db), dt, x.size(0), len, rms_, gelu_},
                 x.device());
    std::vector<Tensor> out{sink.defined() ? sink : need_x ? cast(reshape(dx, x_.shape()), x_.dtype()) : Tensor(),
                            need_w ? cast(dw, weight_.dtype()) : Tensor()};
    if (!rms_) out.push_back(need_b ? cast(db, x_.dtype()) : Tensor());
    return out;
  }
  std::vector<Tensor> saved_tensors() const override { return {x_, weight_, mean_, rstd_}; }
  void release_saved() override {
    x_ = Tensor();
    weight_ = Tensor();
    mean_ = Tensor();
    rstd_ = Tensor();
  }

 private:
  Tensor x_, weight_, mean_, rstd_;  // x_: the pre-activation when gelu_
  bool rms_, gelu_;
};

void check_param(const char* op, const char* what, const Tensor& p, const Tensor& x) {
  if (!p.defined()) return;
  LN_CHECK(p.shape() == Shape{x.size(-1)}, "[", op, "] ", what, " of shape ", shape_str(p.shape()),
           " does not match the last dim of input ", shape_str(x.shape()));
  ops::require_same_dtype(op, x, p);
}

// The norm of x, or of gelu(x) when `gelu` (then x, the pre-activation, is all the graph keeps).
Tensor norm_op(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps, bool rms, bool gelu) {
  const char* op = gelu ? (rms ? "gelu_rms_norm" : "gelu_layer_norm") : (rms ? "rms_norm" : "layer_norm");
  const ProfileScope scope(op);
  ops::common_device(op, {x, weight, bias});
  ops::require_float(op, x);
  LN_CHECK(x.dim() >= 1 && x.size(-1) > 0, "[", op, "] needs a non-empty last dim, got ",
           shape_str(x.shape()));
  LN_CHECK(eps >= 0.0, "[", op, "] eps must be non-negative, got ", eps);
  check_param(op, "weight", weight, x);
  check_param(op, "bias", bias, x);
  const DType dt = ops::kernel_dtype(x);
  const int64_t len = x.size(-1);
  Tensor y, mean, rstd;
  {
    NoGradGuard no_grad;
    const Tensor xr = as_rows(x, len, dt);
    const Tensor w = param_as(weight, dt), b = param_as(bias, dt);
    const int64_t rows = xr.size(0);
    Tensor yr = Tensor::empty(xr.shape(), dt, x.device());
    if (!rms) mean = Tensor::empty({rows}, stats_dtype(dt), x.device());
    rstd = Tensor::empty({rows}, stats_dtype(dt), x.device());
    const cpu::NormParams params{xr.raw_data(), ptr(w),   ptr(b), yr.raw_data(), ptr(mean), rstd.raw_data(),
                                 dt,           rows,     len,    eps,           rms,        gelu};
    run_forward(op, params, x.device());
    y = cast(reshape(yr, x.shape()), x.dtype());
  }
  const std::vector<Tensor> inputs = rms ? std::vector<Tensor>{x, weight} : std::vector<Tensor>{x, weight, bias};
  if (autograd::needs_grad(inputs)) {
    autograd::record(std::make_shared<NormBackward>(x.detach(), weight.defined() ? weight.detach() : Tensor(),
                                                    mean, rstd, rms, gelu),
                     inputs, {y});
  }
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return norm_op(x, weight, bias, eps, false, false);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  return norm_op(x, weight, Tensor(), eps, true, false);
}

Tensor gelu_layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return norm_op(x, weight, bias, eps, false, true);
}

Tensor gelu_rms_norm(const Tensor& x, const Tensor& weight, double eps) {
  return norm_op(x, weight, Tensor(), eps, true, true);
}

}  // namespace longnet
