#include "framework/autograd/checkpoint.h"

#include <algorithm>
#include <optional>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/error.h"
#include "framework/core/rng.h"
#include "framework/ops/copy.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

class CheckpointBackward final : public autograd::Node {
 public:
  CheckpointBackward(CheckpointFn fn, std::vector<Tensor> inputs, RngState rng)
      : fn_(std::move(fn)), inputs_(std::move(inputs)), rng_(rng) {}
  std::string name() const override { return "CheckpointBackward"; }

  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    std::vector<Tensor> detached;
    for (const Tensor& t : inputs_) {
      Tensor d = t.defined() ? t.detach() : t;
      if (t.defined() && t.requires_grad() && is_floating(t.dtype())) d.requires_grad_(true);
      detached.push_back(d);
    }
    // Replay the random stream from where the forward drew, then continue where it had got to.
    Generator& gen = default_generator();
    const RngState after = gen.state();
    gen.set_state(rng_);
    std::vector<Tensor> outs;
    {
      EnableGradGuard enable;
      outs = fn_(detached);
    }
    gen.set_state(after);
    std::vector<Tensor> roots, root_grads;
    for (size_t i = 0; i < outs.size(); ++i) {
      if (outs[i].requires_grad()) {
        roots.push_back(outs[i]);
        root_grads.push_back(grads[i]);
      }
    }
    if (!roots.empty()) autograd::run_backward(roots, root_grads, false);
    std::vector<Tensor> result;
    for (const Tensor& d : detached) result.push_back(d.defined() && d.requires_grad() ? d.grad() : Tensor());
    return result;
  }
  std::vector<Tensor> saved_tensors() const override { return inputs_; }
  void release_saved() override { inputs_.clear(); }

 private:
  CheckpointFn fn_;
  std::vector<Tensor> inputs_;
  RngState rng_;
};

// Calls f(start, n) for consecutive chunks of at most `rows` of `total` rows.
template <class F>
void for_row_chunks(int64_t total, int64_t rows, const F& f) {
  for (int64_t start = 0; start < total; start += rows) f(start, std::min(rows, total - start));
}

class CheckpointRowsBackward final : public autograd::Node {
 public:
  CheckpointRowsBackward(RowwiseFn fn, Tensor x, int64_t rows, RngState rng)
      : fn_(std::move(fn)), x_(std::move(x)), rows_(rows), rng_(rng) {}
  std::string name() const override { return "CheckpointRowsBackward"; }

  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const int64_t total = x_.numel() / x_.size(-1);
    const Tensor flat_x = reshape(x_, {total, x_.size(-1)});
    const Tensor flat_g = reshape(grads[0], {total, grads[0].size(-1)});
    const bool want_x = x_.requires_grad();
    const Tensor dx = want_x ? Tensor::empty(flat_x.shape(), x_.dtype(), x_.device()) : Tensor();
    // The chunks draw from the random stream in the forward's order, from where it started.
    Generator& gen = default_generator();
    const RngState after = gen.state();
    gen.set_state(rng_);
    for_row_chunks(total, rows_, [&](int64_t start, int64_t n) {
      Tensor xc = narrow(flat_x, 0, start, n).detach();
      if (want_x) xc.requires_grad_(true);
      Tensor yc;
      {
        EnableGradGuard enable;
        yc = fn_(xc);
      }
      if (yc.requires_grad()) {
        // Parameters are complete after the last chunk: only then may their hooks (gradient
        // reduction across replicas) see them.
        const bool last = start + n == total;
        std::optional<DeferGradHooks> defer;
        if (!last) defer.emplace();
        autograd::run_backward({yc}, {narrow(flat_g, 0, start, n)}, false);
      }
      if (want_x) {
        const Tensor part = narrow(dx, 0, start, n);
        if (xc.grad().defined()) {
          copy_(part, xc.grad());
        } else {
          fill_(part, 0.0);
        }
      }
    });
    gen.set_state(after);
    return {want_x ? reshape(dx, x_.shape()) : Tensor()};
  }
  std::vector<Tensor> saved_tensors() const override { return {x_}; }
  void release_saved() override { x_ = Tensor(); }

 private:
  RowwiseFn fn_;
  Tensor x_;
  int64_t rows_;
  RngState rng_;
};

}  // namespace

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs) {
  const RngState rng = default_generator().state();
  std::vector<Tensor> outs;
  {
    NoGradGuard no_grad;
    outs = fn(inputs);
  }
  // Fresh handles: an output may alias an input or a parameter, which must not become non-leaf.
  for (Tensor& o : outs) o = o.defined() ? o.detach() : o;
  // Parameters captured by fn are not among `inputs`, so the node must exist whenever grad mode
  // is on: the recomputation is what reaches them.
  if (autograd::grad_enabled()) {
    auto node = std::make_shared<CheckpointBackward>(fn, inputs, rng);
    autograd::record(node, inputs, outs);
  }
  return outs;
}

Tensor checkpoint_rows(const RowwiseFn& fn, const Tensor& x, int64_t rows) {
  LN_CHECK(x.defined() && x.dim() >= 1 && x.size(-1) > 0, "[checkpoint_rows] expects x (..., C) with C > 0, got ",
           x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  LN_CHECK(rows > 0, "[checkpoint_rows] rows per chunk must be positive, got ", rows);
  const RngState rng = default_generator().state();
  const int64_t total = x.numel() / x.size(-1);
  const Tensor flat = reshape(x, {total, x.size(-1)});
  Tensor out;
  {
    NoGradGuard no_grad;
    for_row_chunks(total, rows, [&](int64_t start, int64_t n) {
      const Tensor y = fn(narrow(flat, 0, start, n));
      LN_CHECK(y.dim() == 2 && y.size(0) == n, "[checkpoint_rows] the block must map (rows, C) to (rows, C'); (",
               n, ", ", x.size(-1), ") gave ", shape_str(y.shape()));
      if (n == total) {
        out = y;
        return;
      }
      if (!out.defined()) out = Tensor::empty({total, y.size(1)}, y.dtype(), y.device());
      copy_(narrow(out, 0, start, n), y);
    });
  }
  LN_CHECK(out.defined(), "[checkpoint_rows] x ", shape_str(x.shape()), " has no rows");
  Shape shape = x.shape();
  shape.back() = out.size(1);
  // A fresh handle: the block may return its input or a parameter, which must not become non-leaf.
  out = reshape(out, shape).detach();
  if (autograd::grad_enabled()) {
    autograd::record(std::make_shared<CheckpointRowsBackward>(fn, x, rows, rng), {x}, {out});
  }
  return out;
}

}  // namespace longnet
