#include "framework/ops/loss.h"

#include <algorithm>
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
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"
#include "framework/ops/matmul.h"
#include "framework/ops/shape_ops.h"
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

// `logits` is the shape of the logits, computed or not.
void check_target(const char* op, int64_t bad_row, int64_t bad_value, const Shape& logits, int64_t ignore_index) {
  LN_CHECK(bad_row < 0, "[", op, "] target id ", bad_value, " at flat position ", bad_row, " is outside [0, ",
           logits.back(), ") for logits ", shape_str(logits), " (ignore_index ", ignore_index, ")");
}

Saved forward_cpu(const Tensor& logits, const Tensor& targets, int64_t rows, int64_t classes, int64_t ignore_index) {
  Saved s;
  s.x = reshape(ops::upcast_for_cpu(logits).contiguous(), {rows, classes});
  s.t = reshape(targets.contiguous(), {rows});
  int64_t bad_value = 0;
  const int64_t bad = cpu::find_bad_target(s.t.raw_data(), s.t.dtype(), rows, classes, ignore_index, &bad_value);
  check_target("cross_entropy", bad, bad_value, logits.shape(), ignore_index);
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
    check_target("cross_entropy", verdict[0], verdict[1], logits.shape(), ignore_index);
  }
#else
  LN_FAIL("[cross_entropy] has no kernel for ", device.str(), " tensors");
#endif
  return s;
}

// dlogits from the incoming () gradient g (undefined: 1, read nowhere); the scale g / count is
// formed where the data lives.
void run_backward(cpu::CrossEntropyBackwardParams p, const Tensor& g, const Tensor& count) {
  const Device device = count.device();
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda()) {
    const Tensor gd = g.defined() ? cast(g, loss_dtype(p.dtype)).contiguous() : Tensor();
    return cuda::cross_entropy_backward(device.index, p, gd.defined() ? gd.raw_data() : nullptr,
                                        count.data<int64_t>());
  }
#endif
  LN_CHECK(device.is_cpu(), "[cross_entropy] has no kernel for ", device.str(), " tensors");
  const double n = count.item();
  // count 0: every row is ignored and gets 0, whatever the scale.
  p.scale = n > 0 ? (g.defined() ? g.item() : 1.0) / n : 0.0;
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


// ---- linear_cross_entropy: the head's product and the loss over row chunks ----
//
// The products run against the weight padded with zero rows to a multiple of 8 classes (ld): a
// vocabulary such as 50257 gives logits rows, and dW's rows of dlogits^T, that are not 16-byte
// aligned in bf16, which keeps cuBLASLt off its fast Hopper kernels (a profile on an H100 put
// these products at 100-150 TFLOP/s against 600-730 for the model's other products). Each chunk's
// logits are then a contiguous (n, ld) block whose pad columns are x . 0 = 0; the CE kernels read
// its first V columns through the row stride, and the backward kernel leaves the pad's zeros in
// place, so the pad adds nothing to dx and only dW's rows past V, which are dropped.
//
// When the loss will be differentiated, the forward forms the gradients too, for an upstream
// gradient of 1: right after a chunk's loss, its logits block becomes dlogits and its two products
// run (dx's rows written in place, dW accumulated in f32), so each chunk's logits are computed
// once per step instead of again in the backward. The node keeps dx and dW, and its backward
// only scales them by the upstream gradient. On a GPU one kernel forms a chunk's row losses and
// dlogits in one read of each row (the row held in shared memory between the two) when a row fits
// a block's shared memory; wider rows take the loss kernel and then the gradient kernel.

// Multiple of 8 the head pads its class count to.
constexpr int64_t kClassAlign = 8;

int64_t padded_classes(int64_t classes) { return (classes + kClassAlign - 1) / kClassAlign * kClassAlign; }

// weight (V, D) with zero rows below it up to ld = padded_classes(V): (ld, D), or weight itself
// when V is already a multiple.
Tensor padded_weight(const Tensor& weight) {
  const int64_t classes = weight.size(0), ld = padded_classes(classes);
  if (ld == classes) return weight;
  NoGradGuard no_grad;
  return cat({weight, zeros({ld - classes, weight.size(1)}, weight.dtype(), weight.device())}, 0);
}

// Rows per chunk: `asked`, or when 0 about 2^27 logits (of `ld` a row) a chunk in multiples of 64
// rows; at most all rows, at least one.
int64_t rows_per_chunk(int64_t rows, int64_t ld, int64_t asked) {
  int64_t r = asked;
  if (r == 0) {
    r = (int64_t{1} << 27) / std::max<int64_t>(ld, 1);
    if (r >= 64) r = r / 64 * 64;
  }
  return std::max<int64_t>(1, std::min(r, rows));
}

// f(start, n) for consecutive chunks of at most `chunk` rows.
template <class F>
void for_chunks(int64_t rows, int64_t chunk, F&& f) {
  for (int64_t start = 0; start < rows; start += chunk) f(start, std::min(chunk, rows - start));
}

// What the chunked forward works with, all on x's device: nothing of size (rows, V).
struct HeadSaved {
  Tensor x;       // (rows, D) in the compute dtype
  Tensor weight;  // (V, D)
  Tensor t;       // (rows), contiguous
  Tensor lse;     // (rows) in the loss dtype
  Tensor count;   // () i64: rows whose target is not ignored
};

// The gradients the forward forms, for an upstream gradient of 1.
struct HeadGrads {
  Tensor dx;  // (rows, D) in the compute dtype; undefined when x needs none
  Tensor dw;  // (ld, D) in the loss dtype (f32, f64 for f64), rows past V 0; undefined when w needs none
  bool any() const { return dx.defined() || dw.defined(); }
};

// Logits of rows [start, start + n) as the composite computes them (linear(), compute dtype)
// against the padded weight w_pad (ld, D), in the dtype the device's CE kernels take: an (n, ld)
// block the caller owns, whose first V columns are the logits and the rest 0.
Tensor chunk_logits(const HeadSaved& s, const Tensor& w_pad, int64_t start, int64_t n) {
  NoGradGuard no_grad;
  return ops::kernel_input(linear(narrow(s.x, 0, start, n), w_pad)).contiguous();
}

// The kernels' parameters for rows [start, start + n) of s, with `logits` their block: V classes
// read through the block's row stride.
cpu::CrossEntropyParams chunk_params(const HeadSaved& s, const Tensor& logits, int64_t start, int64_t n,
                                     int64_t ignore_index) {
  LN_CHECK(logits.stride(1) == 1, "[linear_cross_entropy] logits block ", shape_str(logits.shape()),
           " needs unit column stride");
  return {logits.raw_data(), narrow(s.t, 0, start, n).raw_data(), narrow(s.lse, 0, start, n).raw_data(),
          logits.dtype(), s.t.dtype(), n, s.weight.size(0), ignore_index, logits.stride(0)};
}

// After the chunk's forward kernel has written its lse (p: the chunk's parameters): its logits
// block becomes dlogits = (softmax - onehot) / count in place (the pad keeps its zeros), in the
// compute dtype as the composite's cross_entropy hands it to linear's backward. s.count must
// already hold the count over all rows.
void chunk_dlogits(const HeadSaved& s, const Tensor& logits, const cpu::CrossEntropyParams& p) {
  run_backward({p.logits, p.targets, p.lse, logits.raw_data(), p.dtype, p.target_dtype, p.rows, p.classes,
                p.ignore_index, 1.0, p.ld},
               Tensor(), s.count);
}

// Once the chunk's logits block (rows [start, start + n)) holds dlogits: dx's rows = dlogits @
// W_pad straight into dx, and dW_pad = (first chunk) or += dlogits^T @ x's rows in the
// accumulator.
void chunk_products(HeadGrads& grads, const HeadSaved& s, const Tensor& w_pad, const Tensor& logits, int64_t start,
                    int64_t n) {
  const Tensor dl = cast(logits, s.x.dtype());  // a no-op on a GPU, whose kernels take the compute dtype
  if (grads.dx.defined()) matmul_into(narrow(grads.dx, 0, start, n), dl, w_pad);
  if (grads.dw.defined()) matmul_into(grads.dw, transpose(dl, 0, 1), narrow(s.x, 0, start, n), start > 0);
}

// Fills s.lse and s.count, and the gradients `grads` holds; returns the loss.
Tensor head_forward_cpu(HeadSaved& s, HeadGrads& grads, int64_t chunk, int64_t ignore_index,
                        const Shape& logits_shape) {
  const int64_t rows = s.x.size(0), classes = s.weight.size(0);
  int64_t bad_value = 0;
  const int64_t bad = cpu::find_bad_target(s.t.raw_data(), s.t.dtype(), rows, classes, ignore_index, &bad_value);
  check_target("linear_cross_entropy", bad, bad_value, logits_shape, ignore_index);
  const DType dt = loss_dtype(s.x.dtype());
  s.lse = Tensor::empty({rows}, dt, Device::cpu());
  // Counted before the first chunk: the gradients' scale needs it.
  const int64_t count = cpu::count_not_ignored(s.t.raw_data(), s.t.dtype(), rows, ignore_index);
  s.count = scalar_tensor(static_cast<double>(count), DType::I64, Device::cpu());
  const Tensor w_pad = padded_weight(s.weight);
  double total = 0.0;
  for_chunks(rows, chunk, [&](int64_t start, int64_t n) {
    const Tensor logits = chunk_logits(s, w_pad, start, n);
    const cpu::CrossEntropyParams p = chunk_params(s, logits, start, n, ignore_index);
    total += cpu::cross_entropy_forward(p).loss;
    if (grads.any()) {
      chunk_dlogits(s, logits, p);
      chunk_products(grads, s, w_pad, logits, start, n);
    }
  });
  return scalar_tensor(count ? total / static_cast<double>(count) : 0.0, dt, Device::cpu());
}

// As head_forward_cpu; the row losses stay on the device until one pass over all rows sums them
// and checks the targets, as cross_entropy's forward does (no host synchronisation by default).
Tensor head_forward_cuda(HeadSaved& s, HeadGrads& grads, int64_t chunk, int64_t ignore_index,
                         const Shape& logits_shape) {
  const Device device = s.x.device();
  const int64_t rows = s.x.size(0);
  const DType dt = loss_dtype(s.x.dtype());
  s.lse = Tensor::empty({rows}, dt, device);
  s.count = Tensor::empty({}, DType::I64, device);
  Tensor loss = Tensor::empty({}, dt, device);
#ifdef LONGNET_WITH_CUDA
  const Tensor row_loss = Tensor::empty({rows}, dt, device);
  const Tensor w_pad = padded_weight(s.weight);
  const cpu::CrossEntropyParams all{nullptr, s.t.raw_data(), nullptr, s.x.dtype(), s.t.dtype(),
                                    rows, s.weight.size(0), ignore_index};
  // The gradients' scale needs the count before the first chunk; the finishing pass writes the
  // same count again.
  if (grads.any()) cuda::cross_entropy_count(device.index, all, s.count.data<int64_t>());
  for_chunks(rows, chunk, [&](int64_t start, int64_t n) {
    const Tensor logits = chunk_logits(s, w_pad, start, n);
    const cpu::CrossEntropyParams p = chunk_params(s, logits, start, n, ignore_index);
    void* chunk_loss = narrow(row_loss, 0, start, n).raw_data();
    if (!grads.any()) return cuda::cross_entropy_rows(device.index, p, chunk_loss);
    // Loss and dlogits in one read of each row while a row fits a block's shared memory; else a
    // pass for the loss and one for dlogits.
    if (!cuda::cross_entropy_rows_backward(device.index, p, chunk_loss, logits.raw_data(), s.count.data<int64_t>())) {
      cuda::cross_entropy_rows(device.index, p, chunk_loss);
      chunk_dlogits(s, logits, p);
    }
    chunk_products(grads, s, w_pad, logits, start, n);
  });
  const Tensor bad = Tensor::empty({2}, DType::I64, device);
  cuda::cross_entropy_finish(device.index, all, row_loss.raw_data(),
                             {loss.raw_data(), s.count.data<int64_t>(), bad.data<int64_t>()});
  if (check_targets_on_host()) {
    const std::vector<int64_t> verdict = bad.to_vector<int64_t>();
    check_target("linear_cross_entropy", verdict[0], verdict[1], logits_shape, ignore_index);
  }
#else
  (void)grads;
  (void)chunk;
  (void)ignore_index;
  (void)logits_shape;
  LN_FAIL("[linear_cross_entropy] has no kernel for ", device.str(), " tensors");
#endif
  return loss;
}

// saved * g in `dtype`: the gradient for the upstream gradient g from the one the forward formed
// for 1 (saved: contiguous, in the compute dtype or the f32/f64 accumulator). g == 1, the common
// case, is exact and nearly free: saved itself is handed out when it already has `dtype` and the
// node's saved tensors expire, and on a GPU the scaling kernel then returns at once (g is read
// there, not on the host). Any other g: one product in the accumulating type, rounded once to
// `dtype`, on top of the forward's rounding of the gradient for 1.
Tensor scaled_gradient(const Tensor& saved, DType dtype, const Tensor& g, bool saved_expire) {
  const bool reuse = saved_expire && saved.dtype() == dtype;
#ifdef LONGNET_WITH_CUDA
  if (saved.device().is_cuda()) {
    const Tensor out = reuse ? saved : Tensor::empty(saved.shape(), dtype, saved.device());
    const Tensor gd = cast(g, loss_dtype(dtype)).contiguous();
    cuda::scale_gradient(saved.device().index, saved.raw_data(), saved.dtype(), out.raw_data(), dtype,
                         saved.numel(), gd.raw_data());
    return out;
  }
#endif
  const double gv = g.item();
  if (gv != 1.0) return cast(mul(cast(saved, ops::cpu_compute_dtype(saved.dtype())), gv), dtype);
  const Tensor out = cast(saved, dtype);
  // A retained graph may run this node again: it must not hand out (and so expose) its own copy.
  return out.raw_data() == saved.raw_data() && !reuse ? saved.clone() : out;
}

// Hands out the gradients the forward formed, scaled by the upstream gradient (scaled_gradient).
class LinearCrossEntropyBackward final : public autograd::Node {
 public:
  LinearCrossEntropyBackward(HeadGrads grads, Shape x_shape, int64_t classes, DType weight_dtype)
      : grads_(std::move(grads)), x_shape_(std::move(x_shape)), classes_(classes), weight_dtype_(weight_dtype) {}
  std::string name() const override { return "LinearCrossEntropyBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    NoGradGuard no_grad;
    Tensor dx, dw;
    if (next_edges[0].fn && grads_.dx.defined()) {
      dx = reshape(scaled_gradient(grads_.dx, grads_.dx.dtype(), g[0], saved_expire), x_shape_);
    }
    if (next_edges[1].fn && grads_.dw.defined()) {
      // The first V rows of the contiguous (ld, D) accumulator: contiguous too.
      dw = scaled_gradient(narrow(grads_.dw, 0, 0, classes_), weight_dtype_, g[0], saved_expire);
    }
    return {dx, dw, Tensor()};
  }
  std::vector<Tensor> saved_tensors() const override {
    std::vector<Tensor> out;
    for (const Tensor& t : {grads_.dx, grads_.dw}) {
      if (t.defined()) out.push_back(t);
    }
    return out;
  }
  void release_saved() override { grads_ = HeadGrads(); }

 private:
  HeadGrads grads_;
  Shape x_shape_;
  int64_t classes_;
  DType weight_dtype_;
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

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t ignore_index,
                            int64_t chunk_rows) {
  const ProfileScope scope("linear_cross_entropy");
  ops::common_device("linear_cross_entropy", {x, weight, targets});
  ops::require_float("linear_cross_entropy", x);
  ops::require_same_dtype("linear_cross_entropy", x, weight);
  LN_CHECK(weight.dim() == 2, "[linear_cross_entropy] weight must be (V, D), got ", shape_str(weight.shape()));
  LN_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "[linear_cross_entropy] x ", shape_str(x.shape()),
           " needs its last dim equal to weight ", shape_str(weight.shape()), "'s D");
  LN_CHECK(targets.dtype() == DType::I32 || targets.dtype() == DType::I64,
           "[linear_cross_entropy] targets must be i32 or i64, got ", dtype_name(targets.dtype()), " of shape ",
           shape_str(targets.shape()));
  const Shape lead(x.shape().begin(), x.shape().end() - 1);
  LN_CHECK(targets.shape() == lead, "[linear_cross_entropy] x ", shape_str(x.shape()), " needs targets of shape ",
           shape_str(lead), ", got ", shape_str(targets.shape()));
  LN_CHECK(chunk_rows >= 0, "[linear_cross_entropy] chunk_rows must be >= 0 (0: automatic), got ", chunk_rows);
  const int64_t rows = numel_of(lead), classes = weight.size(0);
  LN_CHECK(classes > 0 || rows == 0, "[linear_cross_entropy] weight ", shape_str(weight.shape()), " has no classes");
  Shape logits_shape = lead;
  logits_shape.push_back(classes);
  const int64_t chunk = rows_per_chunk(rows, padded_classes(classes), chunk_rows);
  // Under grad mode the gradients come with the loss; without it (evaluation) none is formed.
  const bool want_x = autograd::needs_grad({x}), want_w = autograd::needs_grad({weight});
  HeadSaved s;
  HeadGrads grads;
  Tensor out;
  {
    NoGradGuard no_grad;
    s.x = reshape(x.detach(), {rows, x.size(-1)});
    s.weight = weight.detach();
    s.t = reshape(targets.detach().contiguous(), {rows});
    if (want_x) grads.dx = Tensor::empty(s.x.shape(), x.dtype(), x.device());
    if (want_w) {
      // The first chunk overwrites the accumulator; with no rows there is none.
      const Shape shape{padded_classes(classes), weight.size(1)};
      const DType acc = loss_dtype(x.dtype());
      grads.dw = rows == 0 ? zeros(shape, acc, x.device()) : Tensor::empty(shape, acc, x.device());
    }
    out = x.device().is_cpu() ? head_forward_cpu(s, grads, chunk, ignore_index, logits_shape)
                              : head_forward_cuda(s, grads, chunk, ignore_index, logits_shape);
  }
  if (want_x || want_w) {
    autograd::record(
        std::make_shared<LinearCrossEntropyBackward>(std::move(grads), x.shape(), classes, weight.dtype()),
        {x, weight, targets}, {out});
  }
  return out;
}

}  // namespace longnet
