// The backward engine: orders the graph reachable from the roots, runs each node once all of its
// consumers have contributed, accumulates into leaves, and frees the graph unless retained.
#include <atomic>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"

namespace longnet::autograd {
namespace {
thread_local bool t_grad_enabled = true;
thread_local bool t_grad_hooks_deferred = false;
std::atomic<uint64_t> g_next_sequence_nr{0};
}  // namespace

bool grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool enabled) { t_grad_enabled = enabled; }
bool grad_hooks_deferred() { return t_grad_hooks_deferred; }
void set_grad_hooks_deferred(bool deferred) { t_grad_hooks_deferred = deferred; }

bool needs_grad(std::initializer_list<Tensor> inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

Edge gradient_edge(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  AutogradMeta* meta = t.impl()->autograd.get();
  if (meta->grad_fn) return {meta->grad_fn, meta->output_nr};
  std::shared_ptr<AccumulateGrad> acc = meta->accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    meta->accumulator = acc;
  }
  return {acc, 0};
}

void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs,
            const std::vector<Tensor>& outputs) {
  node->sequence_nr = g_next_sequence_nr.fetch_add(1, std::memory_order_relaxed);
  node->next_edges.clear();
  for (const Tensor& t : inputs) node->next_edges.push_back(gradient_edge(t));
  node->outputs.clear();
  for (uint32_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    node->outputs.push_back({out.shape(), out.dtype(), out.device()});
    if (!is_floating(out.dtype())) continue;  // integer outputs (indices) carry no gradient
    auto& meta = out.impl()->autograd;
    if (!meta) meta = std::make_unique<AutogradMeta>();
    meta->requires_grad = true;
    meta->grad_fn = node;
    meta->output_nr = i;
  }
}

namespace {

// True when `g` is the only handle on its data: no other Tensor shares its TensorImpl or its
// storage, it spans the whole storage (no slice of a larger buffer would be kept alive) and it is
// a plain value. Storages always own their memory, so nothing outside Tensors can see it either.
bool exclusively_owned(const Tensor& g) {
  const TensorImpl* impl = g.impl();
  return g.impl_ptr().use_count() == 1 && impl->storage.use_count() == 1 && impl->autograd == nullptr &&
         impl->offset == 0 && g.is_contiguous() &&
         impl->storage->nbytes() == static_cast<size_t>(g.numel()) * dtype_size(g.dtype());
}

// Offers `n` (see Node::grad_sinks) each partial sum of its inputs' gradients that nothing but the
// engine holds, taking it out of the buffers until n has run.
void offer_sinks(Node* n, std::unordered_map<Node*, std::vector<Tensor>>& buffers) {
  n->grad_sinks.assign(n->next_edges.size(), Tensor());
  for (size_t i = 0; i < n->next_edges.size(); ++i) {
    const Edge& e = n->next_edges[i];
    if (!e.fn) continue;
    const auto it = buffers.find(e.fn.get());
    if (it == buffers.end() || it->second.size() <= e.input_nr) continue;
    Tensor& slot = it->second[e.input_nr];
    if (slot.defined() && exclusively_owned(slot)) n->grad_sinks[i] = std::move(slot);
  }
}

// What `n` adds to input i's gradient: its output, which already holds the sink when n added into
// it, else the sink plus the output (either may be missing).
Tensor take_contribution(Node* n, size_t i, std::vector<Tensor>& out) {
  Tensor own = i < out.size() ? std::move(out[i]) : Tensor();
  Tensor sink = i < n->grad_sinks.size() ? std::move(n->grad_sinks[i]) : Tensor();
  if (!sink.defined() || (own.defined() && own.impl() == sink.impl())) return own;
  return own.defined() ? add(sink, own) : sink;
}

}  // namespace

std::vector<Tensor> AccumulateGrad::apply(std::vector<Tensor>&& grad_outputs) {
  std::shared_ptr<TensorImpl> leaf = leaf_.lock();
  if (!leaf || !grad_outputs[0].defined()) return {};
  Tensor leaf_t(leaf);
  const Tensor& g = grad_outputs[0];
  LN_CHECK(g.shape() == leaf_t.shape(), "[backward] gradient of shape ", shape_str(g.shape()),
           " for a leaf of shape ", shape_str(leaf_t.shape()));
  Tensor current = leaf_t.grad();
  // The gradient is owned by the leaf (optimizers and clipping modify it in place), so it is
  // never an alias of a tensor the graph or the caller still holds: an incoming gradient that
  // nothing else references (a node's fresh output) is adopted as it is, any other is copied.
  if (!current.defined()) {
    leaf_t.set_grad(exclusively_owned(g) ? g : g.clone());
  } else {
    add_(current, g);
  }
  if (grad_hooks_deferred()) return {};
  for (const GradReadyHook& hook : leaf->autograd->hooks) hook(leaf_t.grad());
  return {};
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
                  bool retain_graph) {
  NoGradGuard no_grad;
  // Count, for every node reachable from the roots, how many edges lead into it.
  std::unordered_map<Node*, int> deps;
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  std::vector<Node*> stack;
  std::unordered_set<Node*> seen;
  std::vector<std::shared_ptr<Node>> root_nodes;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    LN_CHECK(r.requires_grad(), "[backward] tensor of shape ", shape_str(r.shape()),
             " does not require grad and has no grad_fn: nothing to differentiate");
    Edge e = gradient_edge(r);
    Tensor g = grads[i];
    if (!g.defined()) {
      LN_CHECK(r.numel() == 1, "[backward] a gradient must be given for a non-scalar output of shape ",
               shape_str(r.shape()));
      g = ones(r.shape(), r.dtype(), r.device());
    }
    LN_CHECK(g.shape() == r.shape(), "[backward] gradient shape ", shape_str(g.shape()),
             " differs from output shape ", shape_str(r.shape()));
    LN_CHECK(g.dtype() == r.dtype(), "[backward] gradient dtype ", dtype_name(g.dtype()),
             " differs from output dtype ", dtype_name(r.dtype()), " (shape ", shape_str(r.shape()), ")");
    auto& buf = buffers[e.fn.get()];
    buf.resize(e.fn->outputs.empty() ? 1 : e.fn->outputs.size());
    buf[e.input_nr] = buf[e.input_nr].defined() ? add(buf[e.input_nr], g) : g;
    root_nodes.push_back(e.fn);
    if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next_edges) {
      if (!e.fn) continue;
      ++deps[e.fn.get()];
      if (seen.insert(e.fn.get()).second) stack.push_back(e.fn.get());
    }
  }
  std::vector<Node*> ready;
  for (const auto& rn : root_nodes) {
    if (deps[rn.get()] == 0 &&
        std::find(ready.begin(), ready.end(), rn.get()) == ready.end()) {
      ready.push_back(rn.get());
    }
  }
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    LN_CHECK(!n->released, "[backward] trying to backward through ", n->name(),
             " a second time: its saved tensors were freed; pass retain_graph=true to the first "
             "backward");
    std::vector<Tensor> in = std::move(buffers[n]);
    buffers.erase(n);
    in.resize(std::max<size_t>(n->outputs.size(), 1));
    bool any = false;
    for (const Tensor& g : in) any = any || g.defined();
    std::vector<Tensor> out;
    if (any) {
      for (size_t i = 0; i < n->outputs.size(); ++i) {
        if (!in[i].defined() && n->zero_fills_missing_grads()) {
          const OutputMeta& m = n->outputs[i];
          in[i] = zeros(m.shape, m.dtype, m.device);
        }
      }
      n->saved_expire = !retain_graph;
      offer_sinks(n, buffers);
      std::optional<ProfileScope> scope;
      if (Profiler::active() != nullptr) scope.emplace(n->name());
      out = n->apply(std::move(in));
      if (!retain_graph) {
        n->release_saved();
        if (!dynamic_cast<AccumulateGrad*>(n)) n->released = true;
      }
    }
    for (size_t i = 0; i < n->next_edges.size(); ++i) {
      const Edge& e = n->next_edges[i];
      if (!e.fn) continue;
      if (Tensor g = take_contribution(n, i, out); g.defined()) {
        auto& buf = buffers[e.fn.get()];
        buf.resize(std::max<size_t>(e.fn->outputs.size(), 1));
        Tensor& slot = buf[e.input_nr];
        slot = slot.defined() ? add(slot, g) : std::move(g);
      }
      if (--deps[e.fn.get()] == 0) ready.push_back(e.fn.get());
    }
  }
}

}  // namespace longnet::autograd
