#pragma once
// `longnet bench model --memory`: where the activation memory of a training step goes. Runs the
// LM loss forward of a model and reports the bytes the autograd graph keeps for the backward, by
// part (embedding, each layer, head) and by backward node, with each storage counted once (views of
// one storage share it) and charged to the first node in forward order that keeps it. Parameters
// are not counted; 16-bit casts of them (kept by the products) are reported apart, since they do
// not grow with the sequence.
#include <cstdint>
#include <string>
#include <vector>

#include "models/longnet_lm.h"

namespace longnet::tools {

/// Bytes kept by the nodes of one name within a part.
struct NodeMemory {
  std::string node;      // backward node name ("MatmulBackward")
  int64_t bytes = 0;     // activations: storages first kept by these nodes
  int64_t storages = 0;  // how many storages those bytes are
};

/// One part of the model: "embedding", "layer 0", ..., "head" (final norm, logits, loss).
struct PartMemory {
  std::string part;
  std::vector<NodeMemory> nodes;  // by decreasing bytes
  int64_t bytes = 0;              // activations of the part
  int64_t weight_bytes = 0;       // casts of parameters kept by the part's nodes
};

/// The graph of one loss forward, broken down.
struct GraphMemory {
  std::vector<PartMemory> parts;
  int64_t tokens = 0;           // B * N
  int64_t bytes = 0;            // activations over all parts
  int64_t weight_bytes = 0;     // parameter casts over all parts
  int64_t allocator_bytes = 0;  // growth of the allocator's current bytes over the forward
  double loss = 0.0;            // the loss value (equals LongNetLM::loss)
};

/// Runs model.loss's forward on tokens and targets (B, N) part by part and measures what the graph
/// keeps. The graph is freed on return.
GraphMemory graph_memory(const LongNetLM& model, const Tensor& tokens, const Tensor& targets);

/// Prints the breakdown as markdown tables: the layers' mean by node, every part's total, and the
/// totals against the allocator (`element_bytes`: size of one activation element, for the
/// "vectors of dim" column).
void print_graph_memory(const GraphMemory& m, int64_t dim, int64_t element_bytes);

}  // namespace longnet::tools
