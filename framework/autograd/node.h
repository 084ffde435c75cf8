#pragma once
// Nodes of the dynamic autograd graph and the helpers ops use to record themselves.
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet::autograd {

class Node;

/// Where a gradient flows: input `input_nr` of node `fn` (null fn: nowhere).
struct Edge {
  std::shared_ptr<Node> fn;
  uint32_t input_nr = 0;
};

/// Geometry of one output, used to make a zero gradient for outputs that received none.
struct OutputMeta {
  Shape shape;
  DType dtype = DType::F32;
  Device device;
};

/// A backward function: maps gradients of its forward outputs to gradients of its forward inputs.
class Node : public std::enable_shared_from_this<Node> {
 public:
  virtual ~Node() = default;
  /// The op name used in error messages ("MatmulBackward").
  virtual std::string name() const = 0;
  /// One gradient per forward output in, one per forward input (next_edges) out; an undefined
  /// tensor means "no gradient" for that input.
  virtual std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) = 0;
  /// Drops saved tensors once backward has used them (unless the graph is retained).
  virtual void release_saved() {}
  /// Whether outputs that received no gradient are handed to apply() as zeros (the default) or
  /// left undefined, for nodes that can skip the work of a zero gradient (attention's lse).
  virtual bool zero_fills_missing_grads() const { return true; }
  /// The tensors this node keeps for its backward (empty once released), for memory accounting:
  /// views of one storage may appear more than once, and callers dedupe by storage.
  virtual std::vector<Tensor> saved_tensors() const { return {}; }

  std::vector<Edge> next_edges;
  std::vector<OutputMeta> outputs;
  bool released = false;
  /// Order in which record() connected the nodes of this process (the forward order).
  uint64_t sequence_nr = 0;
  /// Set by the engine before apply(): the saved tensors are released right after it (the graph is
  /// not retained), so apply may overwrite a saved storage that nothing else holds.
  bool saved_expire = false;
  /// Set by the engine before apply(), one per next edge: the gradient already summed for that
  /// input when nothing else holds it (contiguous, whole storage), else undefined. A node may add
  /// its own gradient into it in place and return it as that output, sparing the engine a
  /// separate pass to add the two; nodes that return a fresh tensor are added as usual.
  std::vector<Tensor> grad_sinks;
  /// grad_sinks[i] if it can take a gradient of `shape` and `dtype`, else an undefined tensor.
  Tensor grad_sink(size_t i, const Shape& shape, DType dtype) const {
    if (i >= grad_sinks.size() || !grad_sinks[i].defined()) return {};
    const Tensor& s = grad_sinks[i];
    return s.shape() == shape && s.dtype() == dtype ? s : Tensor();
  }
};

/// Accumulates incoming gradients into a leaf tensor's `grad` and runs its hooks.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::weak_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::string name() const override { return "AccumulateGrad"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grad_outputs) override;

 private:
  std::weak_ptr<TensorImpl> leaf_;
};

/// True when grad mode is on and any defined input requires grad: the op must record a node.
bool needs_grad(std::initializer_list<Tensor> inputs);
/// Same for a list of inputs.
bool needs_grad(const std::vector<Tensor>& inputs);
/// The edge a gradient for `t` must follow (its grad_fn, its leaf accumulator, or none).
Edge gradient_edge(const Tensor& t);
/// Connects `node` to `inputs` (its next edges) and makes it the grad_fn of `outputs`.
void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs);

/// Runs backward from `roots` with the given gradients. Gradients accumulate into leaves.
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
                  bool retain_graph);

}  // namespace longnet::autograd
