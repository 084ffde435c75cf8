// Distributed training of the LongNet LM on in-process ranks against one process doing the whole
// work: data parallelism (half the batch each, gradients averaged during backward, optionally
// ZeRO-1), sequence parallelism (the sequence split, each parallel attention core), and both on a
// 2 x 2 mesh. Parameters after optimizer steps must match.
#include <gtest/gtest.h>

#include "framework/dist/inprocess.h"
#include "framework/dist/mesh.h"
#include "framework/dist/reducer.h"
#include "framework/ops/ops.h"
#include "layers/parallel/sequence_parallel.h"
#include "models/longnet_lm.h"
#include "optim/optimizer.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;

ModelConfig tiny_config(const std::string& core) {
  ModelConfig c = model_preset("tiny");
  c.attention = core;
  // With 32 tokens over 2 or 4 ranks, the 8-row segments stay local and the 32-row ones span ranks.
  c.attention_config.segment_lengths = {8, 32};
  c.attention_config.dilation_rates = {1, 2};
  return c;
}

Tensor tokens(int64_t b, int64_t n, int64_t vocab, uint64_t seed) {
  Generator gen(seed);
  return randint(0, vocab, {b, n + 1}, DType::I64, Device::cpu(), &gen);
}

std::unique_ptr<optim::Optimizer> adamw(const std::vector<Tensor>& params) {
  optim::ParamGroup g;
  g.params = params;
  for (size_t i = 0; i < params.size(); ++i) g.names.push_back("p" + std::to_string(i));
  g.weight_decay = 0.01;
  optim::OptimizerSpec spec;
  spec.lr = 1e-2;
  return optim::make_optimizer(spec, {g});
}

/// How one rank takes part: its rows of the batch and its columns of the sequence.
struct Part {
  int64_t batch_start = 0, batch_len = 0;
  int sp_rank = 0, sp_size = 1;
  SequencePlacement placement = SequencePlacement::Contiguous;
};

/// One training step's loss on a rank's part (inputs = data[:, :-1], targets = data[:, 1:]).
Tensor part_loss(const LongNetLM& model, const Tensor& data, const Part& part) {
  const int64_t n = data.size(1) - 1;
  const Tensor rows = data.narrow(0, part.batch_start, part.batch_len);
  const Tensor in = shard_sequence(rows.narrow(1, 0, n), 1, part.sp_rank, part.sp_size, part.placement).contiguous();
  const Tensor tgt = shard_sequence(rows.narrow(1, 1, n), 1, part.sp_rank, part.sp_size, part.placement).contiguous();
  return model.loss(in, tgt, sequence_positions(part.sp_rank, part.sp_size, in.size(1), part.placement)).loss;
}

/// Parameters after `steps` AdamW steps of one process on the whole batch and sequence.
std::vector<Tensor> single_process(const ModelConfig& config, const Tensor& data, int steps) {
  LongNetLM model(config);
  auto opt = adamw(model.parameters());
  for (int s = 0; s < steps; ++s) {
    opt->zero_grad();
    part_loss(model, data, {0, data.size(0), 0, 1}).backward();
    opt->step();
  }
  std::vector<Tensor> out;
  for (const Tensor& p : model.parameters()) out.push_back(p.detach().clone());
  return out;
}

/// The same on a dp x sp mesh of in-process ranks; `zero` shards the optimizer state (ZeRO-1),
/// `placement` lays the sequences over the sp ranks. Returns each rank's parameters.
std::vector<std::vector<Tensor>> on_mesh(const ModelConfig& config, const Tensor& data, int steps, int dp, int sp,
                                         bool zero = false,
                                         SequencePlacement placement = SequencePlacement::Contiguous) {
  std::vector<std::vector<Tensor>> out(dp * sp);
  dist::run_in_process(dp * sp, [&](dist::Communicator& world) {
    const dist::Mesh mesh = dist::make_mesh(world, dp, sp);
    SequenceParallelScope scope(*mesh.sp, placement);
    LongNetLM model(config);
    const std::vector<Tensor> params = model.parameters();
    dist::ReducerOptions ro;
    ro.bucket_bytes = 4096;  // several buckets, so that some launch while backward runs
    dist::GradientReducer reducer(world, params, ro);
    dist::ParameterSharding sharding(world, params);
    auto opt = adamw(zero ? sharding.owned() : params);
    const int64_t rows = data.size(0) / dp;
    for (int s = 0; s < steps; ++s) {
      for (const Tensor& p : params) p.set_grad(Tensor());
      part_loss(model, data, {mesh.dp_rank * rows, rows, mesh.sp_rank, sp, placement}).backward();
      reducer.finish();
      if (s == 0) {
        EXPECT_GT(reducer.launched_during_backward(), 0);
      }
      opt->step();
      if (zero) sharding.sync_parameters();
    }
    for (const Tensor& p : params) out[world.rank()].push_back(p.detach().clone());
  });
  return out;
}

void expect_same_parameters(const std::vector<Tensor>& want, const std::vector<std::vector<Tensor>>& got) {
  for (size_t r = 0; r < got.size(); ++r) {
    ASSERT_EQ(got[r].size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_TRUE(all_close(got[r][i], want[i], 2e-5, 1e-4)) << "rank " << r << " parameter " << i;
    }
  }
}

TEST(DataParallel, TwoRanksWithHalfTheBatchEqualOneRankWithAll) {
  register_parallel_attention_cores();
  const ModelConfig c = tiny_config("dilated");
  const Tensor data = tokens(4, 16, c.vocab_size, 1);
  const auto want = single_process(c, data, 3);
  expect_same_parameters(want, on_mesh(c, data, 3, 2, 1));
  // ZeRO-1: each rank updates only its own parameters, then they are broadcast.
  expect_same_parameters(want, on_mesh(c, data, 3, 2, 1, /*zero=*/true));
}

TEST(DataParallel, TrainingChangesTheParameters) {
  // Guards the equality above against a step that does nothing.
  const ModelConfig c = tiny_config("dilated");
  const Tensor data = tokens(4, 16, c.vocab_size, 1);
  const auto trained = single_process(c, data, 1);
  LongNetLM fresh(c);
  const auto initial = fresh.parameters();
  EXPECT_FALSE(all_close(trained[0], initial[0], 1e-6, 1e-6));
}

class SequenceParallelModel : public ::testing::TestWithParam<std::tuple<std::string, std::string, int>> {};

TEST_P(SequenceParallelModel, StepEqualsSingleProcess) {
  register_parallel_attention_cores();
  const auto [core, reference, ranks] = GetParam();
  const Tensor data = tokens(2, 32, 96, 2);
  const auto want = single_process(tiny_config(reference), data, 2);
  expect_same_parameters(want, on_mesh(tiny_config(core), data, 2, 1, ranks));
}

INSTANTIATE_TEST_SUITE_P(Cores, SequenceParallelModel,
                         ::testing::Values(std::make_tuple("dilated_parallel", "dilated", 2),
                                           std::make_tuple("dilated_parallel", "dilated", 4),
                                           std::make_tuple("ring", "dense", 2),
                                           std::make_tuple("ring", "dense", 4),
                                           std::make_tuple("head_parallel", "dilated", 2),
                                           std::make_tuple("head_parallel_dense", "dense", 4)));

TEST(SequenceParallelModel, RingWithZigzagPlacementEqualsSingleProcess) {
  // Each rank holds chunks r and 2P - 1 - r; the positions of both go into the model, so the step
  // is the single process's.
  register_parallel_attention_cores();
  const Tensor data = tokens(2, 32, 96, 4);
  const auto want = single_process(tiny_config("dense"), data, 2);
  for (int ranks : {2, 4}) {
    SCOPED_TRACE(ranks);
    expect_same_parameters(want, on_mesh(tiny_config("ring"), data, 2, 1, ranks, false, SequencePlacement::Zigzag));
  }
}

TEST(Mesh, DataTimesSequenceParallelEqualsSingleProcess) {
  register_parallel_attention_cores();
  const Tensor data = tokens(4, 32, 96, 3);
  const auto want = single_process(tiny_config("dilated"), data, 2);
  expect_same_parameters(want, on_mesh(tiny_config("dilated_parallel"), data, 2, 2, 2));
}

TEST(Mesh, DegreesMustMultiplyToTheWorld) {
  dist::run_in_process(4, [](dist::Communicator& world) {
    EXPECT_NE(testing::error_message([&] { dist::make_mesh(world, 3, 2); }).find("must equal the world size 4"),
              std::string::npos);
    const dist::Mesh m = dist::make_mesh(world, 2, 2);
    EXPECT_EQ(m.sp->size(), 2);
    EXPECT_EQ(m.dp->rank(), world.rank() / 2);
    EXPECT_EQ(m.sp->rank(), world.rank() % 2);
  });
}

}  // namespace
}  // namespace longnet
