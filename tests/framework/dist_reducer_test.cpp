// GradientReducer and ParameterSharding on in-process ranks, against averages computed here.
#include <gtest/gtest.h>

#include "framework/dist/inprocess.h"
#include "framework/dist/reducer.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet::dist {
namespace {

TEST(GradientReducer, AveragesGradientsInBucketsDuringBackward) {
  const int p = 3;
  run_in_process(p, [&](Communicator& comm) {
    // Three parameters of 4 f64 values: 32-byte buckets hold one each, filled in reverse order.
    std::vector<Tensor> params;
    for (int i = 0; i < 3; ++i) params.push_back(zeros({4}, DType::F64).requires_grad_());
    Tensor unused = zeros({2}, DType::F64).requires_grad_();
    params.push_back(unused);
    ReducerOptions options;
    options.bucket_bytes = 32;
    GradientReducer reducer(comm, params, options);
    EXPECT_EQ(reducer.buckets(), (std::vector<std::vector<size_t>>{{3}, {2}, {1}, {0}}));
    // loss = sum_i (rank + 1) * (i + 1) * sum(p_i): gradient (rank + 1) * (i + 1) everywhere.
    for (int step = 0; step < 2; ++step) {
      for (const Tensor& t : params) t.set_grad(Tensor());
      Tensor loss = scalar_tensor(0.0, DType::F64);
      for (int i = 0; i < 3; ++i) loss = loss + sum(params[i]) * ((comm.rank() + 1.0) * (i + 1));
      loss.backward();
      reducer.finish();
      // The unused parameter's bucket comes first, so nothing could launch before finish().
      EXPECT_EQ(reducer.launched_during_backward(), 0);
      const double mean_rank_factor = (1.0 + 2.0 + 3.0) / p;
      for (int i = 0; i < 3; ++i) {
        EXPECT_DOUBLE_EQ(params[i].grad().to_vector<double>()[3], mean_rank_factor * (i + 1));
      }
      EXPECT_EQ(unused.grad().to_vector<double>(), (std::vector<double>{0.0, 0.0}));
    }
  });
}

TEST(GradientReducer, LaunchesBucketsAsGradientsArrive) {
  run_in_process(2, [&](Communicator& comm) {
    const Tensor a = ones({8}, DType::F64).requires_grad_(), b = ones({8}, DType::F64).requires_grad_();
    ReducerOptions options;
    options.bucket_bytes = 64;
    GradientReducer reducer(comm, {a, b}, options);
    // b's bucket, then a's: both complete inside backward.
    (sum(a * (comm.rank() + 1.0)) + sum(b)).backward();
    reducer.finish();
    EXPECT_EQ(reducer.launched_during_backward(), 2);
    EXPECT_DOUBLE_EQ(a.grad().to_vector<double>()[0], 1.5);
    EXPECT_DOUBLE_EQ(b.grad().to_vector<double>()[0], 1.0);
  });
}

TEST(GradientReducer, AccumulatesSeveralBackwardsWithSyncOffUntilTheLast) {
  run_in_process(2, [&](Communicator& comm) {
    const Tensor a = ones({4}, DType::F64).requires_grad_(), b = ones({4}, DType::F64).requires_grad_();
    ReducerOptions options;
    options.bucket_bytes = 32;  // one bucket each, both launched from hooks
    GradientReducer reducer(comm, {a, b}, options);
    const double f = comm.rank() + 1.0;
    // Micro-batch gradients: a gets f then 10 f, b gets 2 f then 20 f; averages over f = 1, 2.
    reducer.set_sync(false);
    (sum(a * f) + sum(b * (2.0 * f))).backward();
    reducer.set_sync(true);
    (sum(a * (10.0 * f)) + sum(b * (20.0 * f))).backward();
    reducer.finish();
    EXPECT_EQ(reducer.launched_during_backward(), 2);
    EXPECT_DOUBLE_EQ(a.grad().to_vector<double>()[2], 11.0 * 1.5);
    EXPECT_DOUBLE_EQ(b.grad().to_vector<double>()[2], 22.0 * 1.5);
    // Two synced backwards: the first launched the buckets, so the second's share would be lost.
    for (const Tensor& t : {a, b}) t.set_grad(Tensor());
    sum(a * f).backward();
    sum(a * f).backward();
    EXPECT_NE(testing::error_message([&] { reducer.finish(); }).find("call set_sync(false)"), std::string::npos);
  });
}

TEST(GradientReducer, AveragesStayInTheBucketsAndAccumulateThere) {
  run_in_process(2, [&](Communicator& comm) {
    // Odd sizes: each parameter's piece of the shared bucket still starts 256 bytes apart.
    const Tensor a = ones({3}, DType::F32).requires_grad_(), b = ones({5}, DType::F32).requires_grad_();
    GradientReducer reducer(comm, {a, b});
    ASSERT_EQ(reducer.buckets().size(), 1u);
    const float f = comm.rank() + 1.0f;
    (sum(a * f) + sum(b * (2.0f * f))).backward();
    reducer.finish();
    EXPECT_EQ(a.grad().to_vector<float>(), std::vector<float>(3, 1.5f));
    EXPECT_EQ(b.grad().to_vector<float>(), std::vector<float>(5, 3.0f));
    const auto at = [](const Tensor& t) { return reinterpret_cast<uintptr_t>(t.grad().raw_data()); };
    EXPECT_EQ((at(a) - at(b)) % 256, 0u);  // b's piece comes first (reverse order), a's after it
    EXPECT_GT(at(a), at(b));
    // Not zeroed: the next backward adds to the averages in place, and its average is added.
    (sum(a * f) + sum(b * (2.0f * f))).backward();
    reducer.finish();
    EXPECT_EQ(a.grad().to_vector<float>(), std::vector<float>(3, 3.0f));
    EXPECT_EQ(b.grad().to_vector<float>(), std::vector<float>(5, 6.0f));
  });
}

TEST(GradientReducer, RejectsNonLeafParameters) {
  run_in_process(1, [&](Communicator& comm) {
    const Tensor x = ones({2}).requires_grad_();
    EXPECT_NE(testing::error_message([&] { GradientReducer(comm, {x * 2.0}); }).find("is not a leaf"),
              std::string::npos);
  });
}

TEST(ParameterSharding, BalancesOwnersAndBroadcastsFromThem) {
  run_in_process(2, [&](Communicator& comm) {
    std::vector<Tensor> params{zeros({10}, DType::F64), zeros({6}, DType::F64), zeros({5}, DType::F64),
                               zeros({1}, DType::F64)};
    ParameterSharding sharding(comm, params);
    // Largest first to the least loaded: 10 -> 0, 6 -> 1, 5 -> 1, 1 -> 0 (11 elements each).
    EXPECT_EQ(sharding.owner(0), 0);
    EXPECT_EQ(sharding.owner(1), 1);
    EXPECT_EQ(sharding.owner(2), 1);
    EXPECT_EQ(sharding.owner(3), 0);
    // Each rank writes its rank + 1 into what it owns; afterwards everyone has the owners' values.
    for (const Tensor& t : sharding.owned()) fill_(t, comm.rank() + 1.0);
    sharding.sync_parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_EQ(params[i].to_vector<double>()[0], sharding.owner(i) + 1.0) << i;
    }
  });
}

}  // namespace
}  // namespace longnet::dist
