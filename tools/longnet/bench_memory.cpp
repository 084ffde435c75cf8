#include "tools/longnet/bench_memory.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <unordered_set>

#include "framework/autograd/node.h"
#include "framework/core/storage.h"
#include "framework/ops/elementwise.h"

namespace longnet::tools {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// Walks the graph part by part: each call charges the nodes and storages that earlier calls have
// not seen, so a part's bytes are what its own forward added to the graph.
class GraphWalker {
 public:
  GraphWalker(const Module& model, DType compute) : compute_(compute) {
    for (const Tensor& p : model.parameters()) {
      parameters_.insert(p.storage().get());
      if (p.dtype() != compute) cast_sizes_.insert(p.numel());
    }
  }

  PartMemory collect(std::string part, const std::vector<Tensor>& outputs) {
    std::vector<autograd::Node*> nodes, stack;
    for (const Tensor& t : outputs) {
      if (t.defined() && t.grad_fn() && seen_nodes_.insert(t.grad_fn().get()).second) stack.push_back(t.grad_fn().get());
    }
    while (!stack.empty()) {
      autograd::Node* n = stack.back();
      stack.pop_back();
      nodes.push_back(n);
      for (const autograd::Edge& e : n->next_edges) {
        if (e.fn && seen_nodes_.insert(e.fn.get()).second) stack.push_back(e.fn.get());
      }
    }
    // Forward order, so that a storage kept by several nodes is charged to the first of them.
    std::sort(nodes.begin(), nodes.end(), [](const autograd::Node* a, const autograd::Node* b) {
      return a->sequence_nr < b->sequence_nr;
    });
    PartMemory m{std::move(part), {}, 0, 0};
    std::map<std::string, NodeMemory> by_name;
    for (const autograd::Node* n : nodes) {
      for (const Tensor& t : n->saved_tensors()) {
        if (!t.defined()) continue;
        const Storage* s = t.storage().get();
        if (parameters_.count(s) != 0 || !seen_storages_.insert(s).second) continue;
        const auto bytes = static_cast<int64_t>(s->nbytes());
        if (is_parameter_cast(t)) {
          m.weight_bytes += bytes;
          continue;
        }
        NodeMemory& row = by_name[n->name()];
        row.node = n->name();
        row.bytes += bytes;
        ++row.storages;
        m.bytes += bytes;
      }
    }
    for (auto& [name, row] : by_name) m.nodes.push_back(row);
    std::sort(m.nodes.begin(), m.nodes.end(), [](const NodeMemory& a, const NodeMemory& b) { return a.bytes > b.bytes; });
    return m;
  }

 private:
  // A parameter converted to the compute dtype for one op (saved as it is or transposed): a whole
  // storage of a parameter's size in that dtype. An activation of exactly a parameter's size (rows
  // times width equal to a weight's) would be taken for one.
  bool is_parameter_cast(const Tensor& t) const {
    return t.dtype() == compute_ &&
           static_cast<int64_t>(t.storage()->nbytes()) == t.numel() * static_cast<int64_t>(dtype_size(compute_)) &&
           cast_sizes_.count(t.numel()) != 0;
  }

  DType compute_;
  std::unordered_set<const Storage*> parameters_;
  std::unordered_set<int64_t> cast_sizes_;  // numel of the parameters whose dtype differs from the compute dtype
  std::unordered_set<const autograd::Node*> seen_nodes_;
  std::unordered_set<const Storage*> seen_storages_;
};

Tensor add_loss(const Tensor& total, const Tensor& term) {
  if (!term.defined()) return total;
  return total.defined() ? add(total, term) : term;
}

// bytes per token, in KB (1000 bytes), and in vectors of `dim` elements of `element_bytes`.
struct PerToken {
  double kb, vectors;
};

PerToken per_token(double bytes, int64_t tokens, int64_t dim, int64_t element_bytes) {
  const double b = tokens > 0 ? bytes / static_cast<double>(tokens) : 0.0;
  return {b / 1000.0, b / static_cast<double>(dim * element_bytes)};
}

}  // namespace

GraphMemory graph_memory(const LongNetLM& model, const Tensor& tokens, const Tensor& targets) {
  const LongNetDecoder& decoder = model.decoder();
  GraphWalker walker(model, model.config().compute_dtype);
  GraphMemory m;
  m.tokens = tokens.numel();
  const int64_t before = memory_stats(tokens.device()).current_bytes;
  {
    // LongNetLM::loss, part by part.
    LayerContext context;
    Tensor h = decoder.embed(tokens), aux;
    m.parts.push_back(walker.collect("embedding", {h}));
    for (size_t i = 0; i < decoder.layers().size(); ++i) {
      const LayerOutput o = decoder.layers()[i].forward(h, context);
      h = o.x;
      aux = add_loss(aux, o.aux_loss);
      m.parts.push_back(walker.collect("layer " + std::to_string(i), {h, aux}));
    }
    const LossOutput loss =
        decoder_loss(decoder, decoder.layer_norm().forward(h), targets, aux, model.config().ignore_index);
    h = Tensor();
    m.parts.push_back(walker.collect("head", {loss.loss}));
    m.allocator_bytes = memory_stats(tokens.device()).current_bytes - before;
    m.loss = loss.loss.item();
  }
  for (const PartMemory& p : m.parts) {
    m.bytes += p.bytes;
    m.weight_bytes += p.weight_bytes;
  }
  return m;
}

void print_graph_memory(const GraphMemory& m, int64_t dim, int64_t element_bytes) {
  std::map<std::string, NodeMemory> layer_nodes;
  int64_t layers = 0;
  for (const PartMemory& p : m.parts) {
    if (p.part.rfind("layer ", 0) != 0) continue;
    ++layers;
    for (const NodeMemory& n : p.nodes) {
      NodeMemory& row = layer_nodes[n.node];
      row.node = n.node;
      row.bytes += n.bytes;
      row.storages += n.storages;
    }
  }
  std::vector<NodeMemory> rows;
  for (const auto& [name, row] : layer_nodes) rows.push_back(row);
  std::sort(rows.begin(), rows.end(), [](const NodeMemory& a, const NodeMemory& b) { return a.bytes > b.bytes; });
  const double per_layer = static_cast<double>(std::max<int64_t>(layers, 1));
  std::printf("Per layer (mean of %lld), by backward node:\n\n", static_cast<long long>(layers));
  std::printf("| node | storages | MiB | KB / token | vectors of dim |\n|---|---:|---:|---:|---:|\n");
  double layer_total = 0.0;
  for (const NodeMemory& r : rows) {
    const double bytes = static_cast<double>(r.bytes) / per_layer;
    layer_total += bytes;
    const PerToken t = per_token(bytes, m.tokens, dim, element_bytes);
    std::printf("| %s | %.1f | %.2f | %.2f | %.2f |\n", r.node.c_str(), static_cast<double>(r.storages) / per_layer,
                bytes / kMiB, t.kb, t.vectors);
  }
  const PerToken lt = per_token(layer_total, m.tokens, dim, element_bytes);
  std::printf("| **layer** | | **%.2f** | **%.2f** | **%.2f** |\n\n", layer_total / kMiB, lt.kb, lt.vectors);
  std::printf("By part:\n\n| part | MiB | KB / token | vectors of dim | nodes (largest first) | parameter casts MiB |\n");
  std::printf("|---|---:|---:|---:|---|---:|\n");
  for (const PartMemory& p : m.parts) {
    const PerToken t = per_token(static_cast<double>(p.bytes), m.tokens, dim, element_bytes);
    std::string nodes;
    for (size_t i = 0; i < p.nodes.size() && i < 3; ++i) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s%s %.1f", i ? ", " : "", p.nodes[i].node.c_str(),
                    static_cast<double>(p.nodes[i].bytes) / kMiB);
      nodes += buf;
    }
    std::printf("| %s | %.2f | %.2f | %.2f | %s | %.2f |\n", p.part.c_str(), static_cast<double>(p.bytes) / kMiB, t.kb,
                t.vectors, nodes.c_str(), static_cast<double>(p.weight_bytes) / kMiB);
  }
  const PerToken tt = per_token(static_cast<double>(m.bytes), m.tokens, dim, element_bytes);
  std::printf("| **total** | **%.2f** | **%.2f** | **%.2f** | | **%.2f** |\n\n", static_cast<double>(m.bytes) / kMiB, tt.kb,
              tt.vectors, static_cast<double>(m.weight_bytes) / kMiB);
  std::printf("Graph: %.2f MiB of activations + %.2f MiB of parameter casts = %.2f MiB; the allocator's current bytes "
              "grew by %.2f MiB over the forward (loss %.6f).\n\n",
              static_cast<double>(m.bytes) / kMiB, static_cast<double>(m.weight_bytes) / kMiB,
              static_cast<double>(m.bytes + m.weight_bytes) / kMiB, static_cast<double>(m.allocator_bytes) / kMiB, m.loss);
}

}  // namespace longnet::tools
