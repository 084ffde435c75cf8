// Sequence-parallel attention cores on 2, 4 and 8 in-process ranks against the single-process core
// on the whole sequence: outputs, lse, and the gradients of q, k, v through both.
#include <gtest/gtest.h>

#include <mutex>

#include "framework/dist/inprocess.h"
#include "framework/ops/ops.h"
#include "layers/attention/core.h"
#include "layers/parallel/sequence_parallel.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::error_message;

struct Result {
  Tensor out, lse, dq, dk, dv;
};

/// One problem: the whole-sequence tensors and the weights that turn out and lse into a loss.
struct Problem {
  Tensor q, k, v, wout, wlse;
  Problem(int64_t b, int64_t n, int64_t h, int64_t d, uint64_t seed) {
    Generator gen(seed);
    q = randn({b, n, h, d}, DType::F64, Device::cpu(), &gen);
    k = randn({b, n, h, d}, DType::F64, Device::cpu(), &gen);
    v = randn({b, n, h, d}, DType::F64, Device::cpu(), &gen);
    wout = randn({b, n, h, d}, DType::F64, Device::cpu(), &gen);
    wlse = randn({b, h, n}, DType::F64, Device::cpu(), &gen);
  }
};

/// Runs `core` on (q, k, v) and back-propagates sum(out * wout) + sum(lse * wlse).
Result run_core(AttentionCore& core, const Tensor& q0, const Tensor& k0, const Tensor& v0, const Tensor& wout,
                const Tensor& wlse, bool causal) {
  Tensor q = q0.contiguous().detach().requires_grad_(), k = k0.contiguous().detach().requires_grad_(),
         v = v0.contiguous().detach().requires_grad_();
  AttentionOptions options;
  options.causal = causal;
  const AttentionResult r = core.forward(q, k, v, options);
  (sum(r.out * wout) + sum(r.lse * wlse)).backward();
  return {r.out.detach(), r.lse.detach(), q.grad(), k.grad(), v.grad()};
}

/// The core `name` over `ranks` in-process ranks, each holding its shard, against `reference` (a
/// single-process core) on the whole sequence.
void expect_parallel_equals(const std::string& name, const std::string& reference, const AttentionConfig& config,
                            const Problem& pb, int ranks, bool causal,
                            SequencePlacement placement = SequencePlacement::Contiguous) {
  register_parallel_attention_cores();
  auto ref_core = make_attention_core(reference, config);
  const Result ref = run_core(*ref_core, pb.q, pb.k, pb.v, pb.wout, pb.wlse, causal);
  std::vector<Result> got(ranks);
  dist::run_in_process(ranks, [&](dist::Communicator& comm) {
    const int r = comm.rank();
    SequenceParallelScope scope(comm, placement);
    auto core = make_attention_core(name, config);
    const auto shard = [&](const Tensor& t, int64_t dim) { return shard_sequence(t, dim, r, ranks, placement); };
    got[r] = run_core(*core, shard(pb.q, 1), shard(pb.k, 1), shard(pb.v, 1), shard(pb.wout, 1).contiguous(),
                      shard(pb.wlse, 2).contiguous(), causal);
  });
  for (int r = 0; r < ranks; ++r) {
    const auto shard = [&](const Tensor& t, int64_t dim) { return shard_sequence(t, dim, r, ranks, placement); };
    SCOPED_TRACE(name + " rank " + std::to_string(r) + " of " + std::to_string(ranks) + (causal ? " causal" : ""));
    EXPECT_TRUE(all_close(got[r].out, shard(ref.out, 1), 1e-10, 1e-9));
    EXPECT_TRUE(all_close(got[r].lse, shard(ref.lse, 2), 1e-10, 1e-9));
    EXPECT_TRUE(all_close(got[r].dq, shard(ref.dq, 1), 1e-10, 1e-9));
    EXPECT_TRUE(all_close(got[r].dk, shard(ref.dk, 1), 1e-10, 1e-9));
    EXPECT_TRUE(all_close(got[r].dv, shard(ref.dv, 1), 1e-10, 1e-9));
  }
}

AttentionConfig dilated_config(std::vector<int64_t> w, std::vector<int64_t> r) {
  AttentionConfig c;
  c.segment_lengths = std::move(w);
  c.dilation_rates = std::move(r);
  return c;
}

class ParallelCores : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(ParallelCores, RingEqualsDense) {
  const auto [ranks, causal] = GetParam();
  expect_parallel_equals("ring", "dense", {}, Problem(2, 32, 2, 8, 1), ranks, causal);
}

TEST_P(ParallelCores, RingZigzagEqualsDense) {
  const auto [ranks, causal] = GetParam();
  expect_parallel_equals("ring", "dense", {}, Problem(1, 32, 2, 8, 2), ranks, causal, SequencePlacement::Zigzag);
}

TEST_P(ParallelCores, DilatedParallelEqualsDilated) {
  const auto [ranks, causal] = GetParam();
  // With 32 rows: segments of 4 and 8 stay inside chunks of 8 or 16 (and 8 spans chunks of 4);
  // 16 and 64 (clamped to 32) span ranks and travel sparsified.
  const AttentionConfig c = dilated_config({4, 8, 16, 64}, {1, 2, 2, 4});
  expect_parallel_equals("dilated_parallel", "dilated", c, Problem(2, 32, 4, 8, 3), ranks, causal);
}

TEST_P(ParallelCores, HeadParallelEqualsDilatedAndDense) {
  const auto [ranks, causal] = GetParam();
  // 16 heads: 2 to 8 per rank, a multiple of every rate.
  const AttentionConfig c = dilated_config({8, 16}, {1, 2});
  expect_parallel_equals("head_parallel", "dilated", c, Problem(1, 32, 16, 4, 4), ranks, causal);
  expect_parallel_equals("head_parallel_dense", "dense", {}, Problem(1, 16, 8, 4, 5), ranks, causal);
}

INSTANTIATE_TEST_SUITE_P(Ranks, ParallelCores,
                         ::testing::Combine(::testing::Values(2, 4, 8), ::testing::Bool()));

TEST(ParallelCores, ShardSequencePlacements) {
  const Tensor x = arange(0, 8, 1, DType::I64);
  EXPECT_EQ(shard_sequence(x, 0, 1, 2).to_vector<int64_t>(), (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(shard_sequence(x, 0, 0, 2, SequencePlacement::Zigzag).to_vector<int64_t>(),
            (std::vector<int64_t>{0, 1, 6, 7}));
  EXPECT_EQ(shard_sequence(x, 0, 1, 2, SequencePlacement::Zigzag).to_vector<int64_t>(),
            (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_NE(error_message([&] { shard_sequence(x, 0, 0, 3); }).find("does not split into 3"), std::string::npos);
}

TEST(ParallelCores, ErrorsNameTheProblem) {
  register_parallel_attention_cores();
  const Tensor q = zeros({1, 8, 4, 4});
  EXPECT_NE(error_message([&] { make_attention_core("ring")->forward(q, q, q, {}); }).find("no sequence-parallel group"),
            std::string::npos);
  dist::run_in_process(2, [&](dist::Communicator& comm) {
    SequenceParallelScope scope(comm);
    auto hp = make_attention_core("head_parallel", dilated_config({8}, {4}));
    EXPECT_NE(error_message([&] { hp->forward(q, q, q, {}); }).find("not a multiple of dilation rate 4"),
              std::string::npos);
    AttentionOptions padded;
    padded.key_padding_mask = zeros({1, 8}, DType::Bool);
    EXPECT_NE(error_message([&] { make_attention_core("ring")->forward(q, q, q, padded); }).find("key padding"),
              std::string::npos);
    auto dp = make_attention_core("dilated_parallel", dilated_config({12}, {1}));
    EXPECT_NE(error_message([&] { dp->forward(q, q, q, {}); }).find("does not fit chunks of 8"), std::string::npos);
  });
}

}  // namespace
}  // namespace longnet
