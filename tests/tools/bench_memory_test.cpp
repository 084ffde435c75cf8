// bench model --memory: the graph breakdown against a count of what a sub-LN layer must keep, the
// model's own loss, and the allocator.
#include <gtest/gtest.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "framework/core/storage.h"
#include "framework/ops/factory.h"
#include "models/config.h"
#include "tests/support/gpu.h"
#include "tools/longnet/bench_memory.h"

namespace longnet::tools {
namespace {

const PartMemory& part(const GraphMemory& m, const std::string& name) {
  for (const PartMemory& p : m.parts) {
    if (p.part == name) return p;
  }
  ADD_FAILURE() << "no part " << name;
  return m.parts.front();
}

/// (tokens, targets), each (b, n) random ids of c's vocabulary.
std::pair<Tensor, Tensor> random_batch(const ModelConfig& c, int64_t b, int64_t n, Device device, uint64_t seed) {
  Generator g(seed);
  Tensor tokens = randint(0, c.vocab_size, {b, n}, DType::I64, device, &g);
  return {tokens, randint(0, c.vocab_size, {b, n}, DType::I64, device, &g)};
}

TEST(BenchMemory, TinyModelKeepsWhatTheBackwardNeedsOnce) {
  const ModelConfig c = model_preset("tiny");  // f32 on the CPU: no parameter casts
  const LongNetLM model(c);
  const int64_t b = 2, n = 32, tokens_bytes = b * n * 8;
  const auto [tokens, targets] = random_batch(c, b, n, Device::cpu(), 3);
  const GraphMemory m = graph_memory(model, tokens, targets);

  EXPECT_EQ(m.loss, model.loss(tokens, targets).loss.item());
  ASSERT_EQ(m.parts.size(), static_cast<size_t>(c.layers + 2));
  EXPECT_EQ(m.tokens, b * n);
  EXPECT_EQ(m.weight_bytes, 0);
  // Per token, f32: the layer's input (for its first norm), the norm output the q, k, v
  // projections read, q and k after XPOS, v, the attention output (which the inner norm reads
  // too), the inner norm's output (out_proj), the residual sum (final norm), its output (fc1), the
  // GELU input (GELU and the FFN's norm are one fused op that reads it again), the FFN norm's
  // output (fc2); mean and rstd of four norms; the attention's log-sum-exp per head. A later layer
  // shares no position tables with layer 0.
  const int64_t per_token = 9 * c.dim + 2 * c.ffn_dim + 4 * 2 + c.heads;
  const PartMemory& layer = part(m, "layer 1");
  EXPECT_EQ(layer.bytes, b * n * per_token * 4);
  int64_t sum = 0;
  for (const NodeMemory& node : layer.nodes) sum += node.bytes;
  EXPECT_EQ(sum, layer.bytes);
  // The embedding keeps the token ids; the head the final norm's input and statistics, and the
  // head's gradients, formed in the forward: dx (tokens, dim) and dW in f32 over the vocabulary
  // padded to a multiple of 8 (no logits: the head and the loss run in row chunks).
  const int64_t padded_vocab = (c.vocab_size + 7) / 8 * 8;
  EXPECT_EQ(part(m, "embedding").bytes, tokens_bytes);
  EXPECT_EQ(part(m, "head").bytes, b * n * (2 * c.dim + 2) * 4 + padded_vocab * c.dim * 4);
  // The chunked head's node is charged with dx and dW.
  const std::vector<NodeMemory>& head = part(m, "head").nodes;
  const auto lce = std::find_if(head.begin(), head.end(),
                                [](const NodeMemory& r) { return r.node == "LinearCrossEntropyBackward"; });
  ASSERT_NE(lce, head.end());
  EXPECT_EQ(lce->bytes, b * n * c.dim * 4 + padded_vocab * c.dim * 4);
  // The allocator saw the same growth, less the ids that existed before, plus the loss value the
  // graph does not keep.
  const int64_t graph = m.bytes - tokens_bytes;
  EXPECT_GE(m.allocator_bytes, graph);
  EXPECT_LE(m.allocator_bytes, graph + 64);
}

TEST(BenchMemory, ParameterCastsAreCountedApart) {
  ModelConfig c = model_preset("tiny");
  c.compute_dtype = DType::BF16;  // 16-bit activations on the CPU: the products keep bf16 weights
  const LongNetLM model(c);
  const Tensor tokens = zeros({1, 8}, DType::I64, Device::cpu());  // activations of no parameter's size
  const GraphMemory m = graph_memory(model, tokens, tokens);
  // Each layer's products keep q, k, v, out, fc1 and fc2 weights; the four norms keep their
  // weights (biases are not read by the backward), three of dim and the FFN's of ffn_dim; the head
  // keeps the final norm's weight alone (its products ran in the forward: the tied embedding is
  // not kept).
  const int64_t d = c.dim, f = c.ffn_dim;
  const int64_t layer_casts = (4 * d * d + 2 * d * f) * 2 + (3 * d + f) * 2;
  EXPECT_EQ(part(m, "layer 1").weight_bytes, layer_casts);
  EXPECT_EQ(part(m, "head").weight_bytes, d * 2);
}

TEST(BenchMemory, GpuGraphMatchesTheAllocator) {
  LN_REQUIRE_GPU();
  ModelConfig c = model_preset("tiny");
  c.compute_dtype = DType::BF16;
  c.heads = 1;  // head dim 32: the GPU attention kernels take 32, 64 and 128 in bf16
  DefaultDeviceGuard guard(Device::cuda());
  const LongNetLM model(c);
  const int64_t b = 2, n = 32, tokens_bytes = b * n * 8;
  const auto [tokens, targets] = random_batch(c, b, n, Device::cuda(), 4);
  const GraphMemory m = graph_memory(model, tokens, targets);
  EXPECT_EQ(m.loss, model.loss(tokens, targets).loss.item());
  // The chunked head keeps dx (bf16) and dW (f32, padded vocabulary), at most also the final
  // norm's bf16 input, f32 statistics and bf16 weight, and no logits. Activations of a weight's
  // size count as parameter casts (bench_memory.h): here dx and the norm's input are (64, 32),
  // fc1's weight's size, so the head's two figures are taken together.
  const int64_t padded_vocab = (c.vocab_size + 7) / 8 * 8, gradients = b * n * c.dim * 2 + padded_vocab * c.dim * 4;
  const int64_t head = part(m, "head").bytes + part(m, "head").weight_bytes;
  EXPECT_GE(head, gradients);
  EXPECT_LE(head, gradients + b * n * (c.dim * 2 + 2 * 4) + c.dim * 2);
  const int64_t graph = m.bytes + m.weight_bytes - tokens_bytes;
  EXPECT_GE(m.allocator_bytes, graph);
  EXPECT_LE(m.allocator_bytes, graph + 64);
}

}  // namespace
}  // namespace longnet::tools
