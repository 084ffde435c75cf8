#include "framework/autograd/checkpoint.h"

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/rng.h"

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

}  // namespace longnet
