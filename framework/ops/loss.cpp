#include "framework/ops/loss.h"

#include <cstdlib>
#include <string_view>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/loss.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/loss.h"
#endif
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/factory.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

// What the forward leaves for the backward, all on the logits' device.
struct Saved {
  Tensor x;      // (rows, classes), contiguous, in the compute dtype
  Tensor t;      // (rows), contiguous
  Tensor lse;    // (rows) in the loss dtype
  Tensor loss;   // () f32, f64 for f64 logits
  Tensor count;  // () i64: rows whose target is not ignored
};

// f32, or f64 for f64 logits: the dtype of the loss and of the saved log-sum-exps.
DType loss_dtype(DType logits) { return logits == DType::F64 ? DType::F64 : DType::F32; }

void check_target(int64_t bad_row, int64_t bad_value, const Tensor& logits, int64_t ignore_index) {
  LN_CHECK(bad_row < 0, "[cross_entropy] target id ", bad_value, " at flat position ", bad_row, " is outside [0, ",
           logits.size(-1), ") for logits ", shape_str(logits.shape()), " (ignore_index ", ignore_index, ")");
}

Saved forward_cpu(const Tensor& logits, const Tensor& targets, int64_t rows, int64_t classes, int64_t ignore_index) {
  Saved s;
  s.x = reshape(ops::upcast_for_cpu(logits).contiguous(), {rows, classes});
  s.t = reshape(targets.contiguous(), {rows});
  int64_t bad_value = 0;
  const int64_t bad = cpu::find_bad_target(s.t.raw_data(), s.t.dtype(), rows, classes, ignore_index, &bad_value);
  check_target(bad, bad_value, logits, ignore_index);
  s.lse = Tensor::empty({rows}, s.x.dtype(), s.x.device());
  const cpu::CrossEntropySum total = cpu::cross_entropy_forward(
      {s.x.raw_data(), s.t.raw_data(), s.lse.raw_data(), s.x.dtype(), s.t.dtype(), rows, classes, ignore_index});
  s.loss = scalar_tensor(total.count ? total.loss / static_cast<double>(total.count) : 0.0, s.x.dtype(), Device::cpu());
  s.count = scalar_tensor(static_cast<double>(total.count), DType::I64, Device::cpu());
  return s;
}

#ifdef LONGNET_WITH_CUDA
// True when LONGNET_CHECK_TARGETS is set to anything but "" or "0": GPU target ids are then
// checked on the host (see forward_cuda). Read on every call, so that it can be switched on in a
// running program.
bool check_targets_on_host() {
  const char* v = std::getenv("LONGNET_CHECK_TARGETS");
  return v != nullptr && *v != '\0' && std::string_view(v) != "0";
}
#endif

// 16-bit logits stay 16-bit: the kernels widen them as they read. The loss and the count stay on
// the device, and target ids are checked there too, by the kernel that sums the loss: by default
// nothing is read back, so the host never waits for the GPU in this op. A bad id is not silent:
// the loss is NaN and so is the gradient of every row with a bad id (a device-side assert instead
// would leave the CUDA context unusable). With LONGNET_CHECK_TARGETS=1 the op also reads back the
// kernel's verdict (first bad row, its id) and raises the CPU's error: one small synchronous read
// per call, for finding the bad batch.
Saved forward_cuda(const Tensor& logits, const Tensor& targets, int64_t rows, int64_t classes, int64_t ignore_index) {
  const Device device = logits.device();
  Saved s;
  s.x = reshape(logits.contiguous(), {rows, classes});
  s.t = reshape(targets.contiguous(), {rows});
  const DType dt = loss_dtype(s.x.dtype());
  s.lse = Tensor::empty({rows}, dt, device);
  s.loss = Tensor::empty({}, dt, device);
  s.count = Tensor::empty({}, DType::I64, device);
#ifdef LONGNET_WITH_CUDA
  const Tensor bad = Tensor::empty({2}, DType::I64, device);
  cuda::cross_entropy_forward(
      device.index,
      {s.x.raw_data(), s.t.raw_data(), s.lse.raw_data(), s.x.dtype(), s.t.dtype(), rows, classes, ignore_index},
      {s.loss.raw_data(), s.count.data<int64_t>(), bad.data<int64_t>()});
  if (check_targets_on_host()) {
    const std::vector<int64_t> verdict = bad.to_vector<int64_t>();
    check_target(verdict[0], verdict[1], logits, ignore_index);
  }
#else
  LN_FAIL("[cross_entropy] has no kernel for ", device.str(), " tensors");
#endif
  return s;
}

// dlogits from the incoming () gradient g; the scale g / count is formed where the data lives.
void run_backward(cpu::CrossEntropyBackwardParams p, const Tensor& g, const Tensor& count) {
  const Device device = count.device();
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) {
    const Tensor gd = cast(g, loss_dtype(p.dtype)).contiguous();
    return cuda::cross_entropy_backward(device.index, p, gd.raw_data(), count.data<int64_t>());
  }
#endif
  LN_CHECK(device.is_cpu(), "[cross_entropy] has no kernel for ", device.str(), " tensors");
  const double n = count.item();
  // count 0: every row is ignored and gets 0, whatever the scale.
  p.scale = n > 0 ? g.item() / n : 0.0;
  cpu::cross_entropy_backward(p);
}

class CrossEntropyBackward final : public autograd::Node {
 public:
  CrossEntropyBackward(Saved saved, Shape shape, DType dtype, int64_t ignore_index)
      : s_(std::move(saved)), shape_(std::move(shape)), dtype_(dtype), ignore_index_(ignore_index) {}
  std::string name() const override { return "CrossEntropyBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    // The kernels read each logit once, right before writing its gradient in the same place, so
    // logits that expire with this node and that nothing else holds take their gradient: the
    // step's peak then holds one (rows, classes) block instead of two.
    const bool in_place = saved_expire && s_.x.storage().use_count() == 1;
    Tensor dx = in_place ? s_.x : Tensor::empty(s_.x.shape(), s_.x.dtype(), s_.x.device());
    run_backward({s_.x.raw_data(), s_.t.raw_data(), s_.lse.raw_data(), dx.raw_data(), s_.x.dtype(), s_.t.dtype(),
                  s_.x.size(0), s_.x.size(1), ignore_index_, 1.0},
                 g[0], s_.count);
    return {cast(reshape(dx, shape_), dtype_), Tensor()};
  }
  std::vector<Tensor> saved_tensors() const override { return {s_.x, s_.t, s_.lse, s_.count}; }
  void release_saved() override { s_ = Saved(); }

 private:
  Saved s_;      // without the loss: holding the output here would keep it alive
  Shape shape_;  // of the original logits
  DType dtype_;
  int64_t ignore_index_;
};

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  const ProfileScope scope("cross_entropy");
  ops::common_device("cross_entropy", {logits, targets});
  ops::require_float("cross_entropy", logits);
  LN_CHECK(targets.dtype() == DType::I32 || targets.dtype() == DType::I64,
           "[cross_entropy] targets must be i32 or i64, got ", dtype_name(targets.dtype()), " of shape ",
           shape_str(targets.shape()));
  LN_CHECK(logits.dim() >= 1, "[cross_entropy] logits need a class dim, got shape ", shape_str(logits.shape()));
  const Shape lead(logits.shape().begin(), logits.shape().end() - 1);
  LN_CHECK(targets.shape() == lead, "[cross_entropy] logits ", shape_str(logits.shape()), " need targets of shape ",
           shape_str(lead), ", got ", shape_str(targets.shape()));
  const int64_t classes = logits.size(-1);
  const int64_t rows = numel_of(lead);
  LN_CHECK(classes > 0 || rows == 0, "[cross_entropy] logits ", shape_str(logits.shape()), " have no classes");
  Saved s;
  {
    NoGradGuard no_grad;
    s = logits.device().is_cpu() ? forward_cpu(logits, targets, rows, classes, ignore_index)
                                 : forward_cuda(logits, targets, rows, classes, ignore_index);
  }
  Tensor out = s.loss;
  if (autograd::needs_grad({logits})) {
    s.x = s.x.detach();
    s.t = s.t.detach();
    s.loss = Tensor();
    autograd::record(std::make_shared<CrossEntropyBackward>(std::move(s), logits.shape(), logits.dtype(), ignore_index),
                     {logits, targets}, {out});
  }
  return out;
}

}  // namespace longnet
