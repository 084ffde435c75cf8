// The in-process backend's collectives against values computed here from each rank's known input.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "framework/dist/inprocess.h"
#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet::dist {
namespace {

using testing::error_message;

/// Rank r's input: values r * 100 + i, i = 0 .. n - 1.
Tensor rank_values(int r, int64_t n, DType dtype = DType::F64) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = r * 100.0 + i;
  return from_vector(v, {n}).to(dtype);
}

std::vector<double> values(const Tensor& t) { return t.to(DType::F64).to_vector<double>(); }

class Collectives : public ::testing::TestWithParam<int> {};

TEST_P(Collectives, AllReduceSumAvgMaxMin) {
  const int p = GetParam();
  run_in_process(p, [&](Communicator& comm) {
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min}) {
      Tensor t = rank_values(comm.rank(), 5);
      comm.all_reduce(t, op);
      for (int64_t i = 0; i < 5; ++i) {
        double sum = 0, mx = -1e300, mn = 1e300;
        for (int r = 0; r < p; ++r) {
          sum += r * 100.0 + i;
          mx = std::max(mx, r * 100.0 + i);
          mn = std::min(mn, r * 100.0 + i);
        }
        const double want = op == ReduceOp::Sum ? sum : op == ReduceOp::Avg ? sum / p : op == ReduceOp::Max ? mx : mn;
        EXPECT_DOUBLE_EQ(values(t)[i], want) << reduce_op_name(op) << " rank " << comm.rank();
      }
    }
  });
}

TEST_P(Collectives, AllReduceIntegersAndBf16) {
  const int p = GetParam();
  run_in_process(p, [&](Communicator& comm) {
    Tensor i = rank_values(comm.rank(), 3, DType::I64);
    comm.all_reduce(i);
    Tensor b = full({4}, comm.rank() + 1.0, DType::BF16);
    comm.all_reduce(b);
    EXPECT_EQ(i.to_vector<int64_t>()[2], 100 * p * (p - 1) / 2 + 2 * p);
    EXPECT_DOUBLE_EQ(values(b)[0], p * (p + 1) / 2.0);
  });
}

TEST_P(Collectives, AllGatherReduceScatterAllToAll) {
  const int p = GetParam();
  run_in_process(p, [&](Communicator& comm) {
    const int r = comm.rank();
    Tensor gathered = zeros({p, 3}, DType::F64);
    comm.all_gather(rank_values(r, 3).view({1, 3}), gathered);
    // reduce_scatter: every rank contributes rank_values(r, 2p); rank r keeps elements 2r, 2r + 1.
    Tensor mine = zeros({2}, DType::F64);
    comm.reduce_scatter(rank_values(r, 2 * p), mine, ReduceOp::Sum);
    // all_to_all: rank r sends piece j = (r * 10 + j) to rank j.
    std::vector<double> send(p);
    for (int j = 0; j < p; ++j) send[j] = r * 10.0 + j;
    Tensor received = zeros({p}, DType::F64);
    comm.all_to_all(from_vector(send, {p}), received);
    const auto g = values(gathered), m = values(mine), a = values(received);
    for (int i = 0; i < p; ++i) {
      for (int c = 0; c < 3; ++c) EXPECT_EQ(g[i * 3 + c], i * 100.0 + c);
      EXPECT_EQ(a[i], i * 10.0 + r);
    }
    const double base = 100.0 * p * (p - 1) / 2;
    EXPECT_EQ(m[0], base + p * (2.0 * r));
    EXPECT_EQ(m[1], base + p * (2.0 * r + 1));
  });
}

TEST_P(Collectives, BroadcastSendRecvBarrier) {
  const int p = GetParam();
  std::atomic<int> before{0};
  run_in_process(p, [&](Communicator& comm) {
    const int r = comm.rank();
    Tensor t = rank_values(r, 4);
    comm.broadcast(t, p - 1);
    EXPECT_EQ(values(t), values(rank_values(p - 1, 4)));
    // A ring shift: each rank sends to the next and receives from the previous.
    Tensor got = zeros({4}, DType::F64);
    comm.send_recv(rank_values(r, 4), (r + 1) % p, got, (r + p - 1) % p);
    EXPECT_EQ(values(got), values(rank_values((r + p - 1) % p, 4)));
    if (p > 1 && r == 0) comm.send(full({2}, 7.0, DType::F64), p - 1);
    if (p > 1 && r == p - 1) {
      Tensor x = zeros({2}, DType::F64);
      comm.recv(x, 0);
      EXPECT_EQ(values(x)[1], 7.0);
    }
    ++before;
    comm.barrier();
    EXPECT_EQ(before.load(), p);
  });
}

TEST_P(Collectives, AsyncOperationsCompleteInAnyWaitOrder) {
  const int p = GetParam();
  run_in_process(p, [&](Communicator& comm) {
    Tensor a = full({2}, 1.0, DType::F64), b = full({2}, 2.0, DType::F64);
    auto wa = comm.all_reduce_async(a, ReduceOp::Sum);
    auto wb = comm.all_reduce_async(b, ReduceOp::Sum);
    // Ranks wait in opposite orders: staging at launch means neither order deadlocks.
    if (comm.rank() % 2) std::swap(wa, wb);
    wa->wait();
    wb->wait();
    wa->wait();
    EXPECT_EQ(values(a)[0], p * 1.0);
    EXPECT_EQ(values(b)[0], p * 2.0);
  });
}

TEST_P(Collectives, ReceivesMatchSendsInPostingOrder) {
  const int p = GetParam();
  run_in_process(p, [&](Communicator& comm) {
    const int next = (comm.rank() + 1) % p, prev = (comm.rank() + p - 1) % p;
    Tensor a = zeros({1}, DType::F64), b = zeros({1}, DType::F64);
    auto wa = comm.send_recv_async(full({1}, 1.0, DType::F64), next, a, prev);
    auto wb = comm.send_recv_async(full({1}, 2.0, DType::F64), next, b, prev);
    wb->wait();  // the second receive, waited first, still gets the second message
    wa->wait();
    EXPECT_EQ(values(a)[0], 1.0);
    EXPECT_EQ(values(b)[0], 2.0);
  });
}

TEST_P(Collectives, SplitIntoGroups) {
  const int p = GetParam();
  run_in_process(p, [&](Communicator& comm) {
    // Even and odd ranks, ordered by descending world rank.
    auto sub = comm.split(comm.rank() % 2, -comm.rank());
    ASSERT_TRUE(sub);
    const int members = (p + 1 - comm.rank() % 2) / 2;
    EXPECT_EQ(sub->size(), members);
    Tensor t = full({1}, comm.rank(), DType::F64);
    sub->all_reduce(t);
    double want = 0;
    for (int r = comm.rank() % 2; r < p; r += 2) want += r;
    EXPECT_EQ(values(t)[0], want);
    // Descending keys: the highest world rank of the group is its rank 0.
    Tensor first = full({1}, comm.rank(), DType::F64);
    sub->broadcast(first, 0);
    EXPECT_EQ(values(first)[0], comm.rank() % 2 == (p - 1) % 2 ? p - 1 : p - 2);
    auto none = comm.split(comm.rank() == 0 ? -1 : 0, 0);
    EXPECT_EQ(none == nullptr, comm.rank() == 0);
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, Collectives, ::testing::Values(1, 2, 3, 4));

TEST(InProcess, BadArgumentsAreReported) {
  run_in_process(2, [&](Communicator& comm) {
    EXPECT_NE(error_message([&] { comm.all_gather(zeros({3}), zeros({5})); }).find("[all_gather] a group of 2"),
              std::string::npos);
    EXPECT_NE(error_message([&] { comm.send(zeros({3}), 2); }).find("peer rank 2 outside a group of 2"),
              std::string::npos);
    EXPECT_NE(error_message([&] { comm.all_reduce(zeros({4, 4}).transpose(0, 1)); }).find("must be contiguous"),
              std::string::npos);
    EXPECT_NE(error_message([&] { comm.all_reduce(zeros({2}, DType::Bool)); }).find("cannot reduce bool"),
              std::string::npos);
    comm.barrier();
  });
}

TEST(InProcess, MismatchedCollectivesAreReported) {
  const std::string msg = error_message([] {
    run_in_process(2, [](Communicator& comm) {
      if (comm.rank() == 0) {
        comm.all_reduce(zeros({2}));
      } else {
        comm.barrier();
      }
    });
  });
  EXPECT_NE(msg.find("mismatch"), std::string::npos) << msg;
}

TEST(InProcess, AFailingRankStopsTheOthers) {
  std::atomic<int> stopped{0};
  const std::string msg = error_message([&] {
    run_in_process(3, [&](Communicator& comm) {
      if (comm.rank() == 1) LN_FAIL("[test] rank one gives up");
      try {
        comm.all_reduce(zeros({2}));
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("rank 1 failed"), std::string::npos) << e.what();
        ++stopped;
        throw;
      }
    });
  });
  EXPECT_NE(msg.find("rank 1 of 3 failed: [test] rank one gives up"), std::string::npos) << msg;
  EXPECT_EQ(stopped.load(), 2);
}

TEST(InProcess, AMissingPeerTimesOut) {
  InProcessOptions options;
  options.timeout = std::chrono::milliseconds(100);
  const std::string msg = error_message([&] {
    run_in_process(
        2,
        [](Communicator& comm) {
          if (comm.rank() == 0) {
            Tensor t = zeros({1});
            comm.recv(t, 1);
          }
        },
        options);
  });
  EXPECT_NE(msg.find("timed out after 100 ms in recv waiting for rank 1"), std::string::npos) << msg;
}

}  // namespace
}  // namespace longnet::dist
