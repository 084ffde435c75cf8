#include "framework/ops/loss.h"

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/cpu/loss.h"
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/factory.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

class CrossEntropyBackward final : public autograd::Node {
 public:
  CrossEntropyBackward(Tensor logits, Tensor targets, Tensor lse, Shape shape, DType dtype, int64_t count,
                       int64_t ignore_index)
      : logits_(std::move(logits)), targets_(std::move(targets)), lse_(std::move(lse)), shape_(std::move(shape)),
        dtype_(dtype), count_(count), ignore_index_(ignore_index) {}
  std::string name() const override { return "CrossEntropyBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    Tensor dx = Tensor::empty(logits_.shape(), logits_.dtype(), logits_.device());
    // count 0: every row is ignored and gets 0, whatever the scale.
    const double scale = count_ ? g[0].item() / static_cast<double>(count_) : 0.0;
    cpu::cross_entropy_backward({logits_.raw_data(), targets_.raw_data(), lse_.raw_data(), dx.raw_data(),
                                 logits_.dtype(), targets_.dtype(), logits_.size(0), logits_.size(1),
                                 ignore_index_, scale});
    return {cast(reshape(dx, shape_), dtype_), Tensor()};
  }
  void release_saved() override {
    logits_ = Tensor();
    targets_ = Tensor();
    lse_ = Tensor();
  }

 private:
  Tensor logits_, targets_, lse_;  // (rows, classes) and (rows), contiguous, in the compute dtype
  Shape shape_;                    // of the original logits
  DType dtype_;
  int64_t count_;
  int64_t ignore_index_;
};

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  ops::common_device("cross_entropy", {logits, targets});
  ops::require_cpu("cross_entropy", logits);
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
  Tensor x, t, lse;
  cpu::CrossEntropySum total;
  {
    NoGradGuard no_grad;
    x = reshape(ops::upcast_for_cpu(logits).contiguous(), {rows, classes});
    t = reshape(targets.contiguous(), {rows});
    int64_t bad_value = 0;
    const int64_t bad = cpu::find_bad_target(t.raw_data(), t.dtype(), rows, classes, ignore_index, &bad_value);
    LN_CHECK(bad < 0, "[cross_entropy] target id ", bad_value, " at flat position ", bad,
             " is outside [0, ", classes, ") for logits ", shape_str(logits.shape()), " (ignore_index ",
             ignore_index, ")");
    lse = Tensor::empty({rows}, x.dtype(), x.device());
    total = cpu::cross_entropy_forward(
        {x.raw_data(), t.raw_data(), lse.raw_data(), x.dtype(), t.dtype(), rows, classes, ignore_index});
  }
  const double loss = total.count ? total.loss / static_cast<double>(total.count) : 0.0;
  Tensor out = scalar_tensor(loss, x.dtype(), logits.device());
  if (autograd::needs_grad({logits})) {
    autograd::record(std::make_shared<CrossEntropyBackward>(x.detach(), t.detach(), lse, logits.shape(),
                                                           logits.dtype(), total.count, ignore_index),
                     {logits, targets}, {out});
  }
  return out;
}

}  // namespace longnet
