// The loader: determinism, sharding, epochs, exact resume from a saved state, errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "data/loader.h"
#include "framework/core/error.h"
#include "tests/data/data_test_util.h"
#include "tests/support/gradcheck.h"
#include "tests/support/gpu.h"

namespace longnet::data {
namespace {

using testing::TempDir;

// Example i is (i, i * 10 + 1, ..., i * 10 + length - 1) under any seed and epoch, so a batch
// row names the example it came from.
class CountingDataset final : public Dataset {
 public:
  CountingDataset(int64_t size, int64_t length, int64_t fail_at = -1)
      : size_(size), length_(length), fail_at_(fail_at) {}
  int64_t size() const override { return size_; }
  std::vector<FieldSpec> fields() const override { return {{"tokens", length_}, {"id", 1}}; }
  void get(uint64_t, int64_t, int64_t index, std::span<int64_t* const> out) const override {
    LN_CHECK(index != fail_at_, "[CountingDataset] cannot read example ", index);
    for (int64_t k = 0; k < length_; ++k) out[0][k] = index * 10 + k;
    out[1][0] = index;
  }

 private:
  int64_t size_, length_, fail_at_;
};

std::vector<int64_t> ids_of(const Batch& b) { return b.field("id").to_vector<int64_t>(); }

LoaderOptions opts(int64_t batch, uint64_t seed, int rank = 0, int size = 1, int prefetch = 2) {
  LoaderOptions o;
  o.batch_size = batch;
  o.seed = seed;
  o.dp_rank = rank;
  o.dp_size = size;
  o.prefetch = prefetch;
  return o;
}

TEST(Loader, BatchesHaveTheFieldsAndShiftedTargets) {
  auto ds = std::make_shared<CountingDataset>(10, 6);
  Loader loader(ds, opts(2, 1));
  const Batch b = loader.next();
  EXPECT_EQ(b.names, (std::vector<std::string>{"tokens", "id"}));
  EXPECT_EQ(b.tokens().shape(), (Shape{2, 6}));
  EXPECT_EQ(b.tokens().dtype(), DType::I64);
  EXPECT_EQ(b.inputs().shape(), (Shape{2, 5}));
  const auto ids = ids_of(b);
  const auto in = b.inputs().to_vector<int64_t>(), tg = b.targets().to_vector<int64_t>();
  for (int r = 0; r < 2; ++r) {
    for (int k = 0; k < 5; ++k) {
      EXPECT_EQ(in[r * 5 + k], ids[r] * 10 + k);
      EXPECT_EQ(tg[r * 5 + k], ids[r] * 10 + k + 1);
    }
  }
  EXPECT_NE(longnet::testing::error_message([&] { b.field("mask"); }).find("no field 'mask' (fields: tokens, id)"), std::string::npos);
}

TEST(Loader, EachEpochVisitsEveryExampleOnceAcrossRanksAndReshuffles) {
  auto ds = std::make_shared<CountingDataset>(50, 2);
  const int dp = 3;
  const int64_t batch = 4;  // 12 per global batch: 4 batches per epoch, 2 examples dropped
  std::vector<std::unique_ptr<Loader>> ranks;
  for (int r = 0; r < dp; ++r) ranks.push_back(std::make_unique<Loader>(ds, opts(batch, 9, r, dp)));
  EXPECT_EQ(ranks[0]->batches_per_epoch(), 4);
  std::vector<std::vector<int64_t>> order(2);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int64_t> seen;
    for (int b = 0; b < 4; ++b) {
      for (int r = 0; r < dp; ++r) {
        const Batch x = ranks[r]->next();
        EXPECT_EQ(x.epoch, epoch);
        EXPECT_EQ(x.index, b);
        for (int64_t id : ids_of(x)) {
          EXPECT_TRUE(seen.insert(id).second) << "example " << id << " twice in epoch " << epoch;
          order[epoch].push_back(id);
        }
      }
    }
    EXPECT_EQ(seen.size(), 48u);
  }
  EXPECT_NE(order[0], order[1]);
  // Not shuffled: dataset order, interleaved by rank.
  LoaderOptions plain = opts(2, 9, 1, 2);
  plain.shuffle = false;
  Loader ordered(ds, plain);
  EXPECT_EQ(ids_of(ordered.next()), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ids_of(ordered.next()), (std::vector<int64_t>{6, 7}));
}

TEST(Loader, SequenceParallelPeersShareBatchesDataParallelRanksDoNot) {
  // A 2 x 2 mesh: world ranks 0..3, dp_rank = world / 2, sp_rank = world % 2. Each rank builds
  // its loader from its dp coordinates only.
  auto ds = std::make_shared<CountingDataset>(64, 4);
  std::vector<std::unique_ptr<Loader>> world;
  for (int w = 0; w < 4; ++w) world.push_back(std::make_unique<Loader>(ds, opts(2, 8, w / 2, 2)));
  for (int step = 0; step < 20; ++step) {
    std::vector<std::vector<int64_t>> tokens;
    for (auto& l : world) tokens.push_back(l->next().tokens().to_vector<int64_t>());
    EXPECT_EQ(tokens[0], tokens[1]);  // sp peers of dp group 0
    EXPECT_EQ(tokens[2], tokens[3]);  // sp peers of dp group 1
    EXPECT_NE(tokens[0], tokens[2]);
  }
}

TEST(Loader, SameSeedSameBatchesForEveryPrefetchDepth) {
  auto ds = std::make_shared<CountingDataset>(64, 3);
  Loader a(ds, opts(4, 5, 0, 1, 0)), b(ds, opts(4, 5, 0, 1, 3)), c(ds, opts(4, 6, 0, 1, 1));
  int differ = 0;
  for (int i = 0; i < 40; ++i) {  // two and a half epochs
    const auto x = ids_of(a.next());
    EXPECT_EQ(x, ids_of(b.next()));
    differ += x != ids_of(c.next());
  }
  EXPECT_GT(differ, 30);
}

TEST(Loader, ResumingFromASavedStateGivesExactlyTheNextBatches) {
  TempDir dir;
  // A real store and window dataset, so resuming covers the random windows as well.
  CorpusReader corpus(testing::licenses_corpus());
  StoreHeader h;
  h.vocab_size = testing::shared_tokenizer().vocab_size();
  TokenStoreWriter w(dir.file("s.h5"), h);
  Document d;
  for (int i = 0; i < 6 && corpus.next(d); ++i) w.add_document(testing::shared_tokenizer().encode(d.text));
  w.commit();
  auto ds = std::make_shared<WindowDataset>(TokenStore::open(dir.file("s.h5")), 63, WindowMode::kRandom);
  for (int prefetch : {0, 2}) {
    Loader reference(ds, opts(3, 11, 1, 2, prefetch));
    const int64_t per_epoch = reference.batches_per_epoch();
    ASSERT_GT(per_epoch, 3);
    // Stop just before an epoch ends, so the resumed run crosses into the next epoch.
    const int64_t stop = per_epoch - 2;
    Loader first(ds, opts(3, 11, 1, 2, prefetch));
    for (int64_t i = 0; i < stop; ++i) first.next();
    const std::string saved = first.state().to_json().dump();
    std::vector<std::vector<int64_t>> expected;
    for (int64_t i = 0; i < stop; ++i) reference.next();
    for (int i = 0; i < 6; ++i) expected.push_back(reference.next().tokens().to_vector<int64_t>());

    Loader resumed(ds, opts(3, 11, 1, 2, prefetch));
    resumed.next();  // a position that must be overwritten
    resumed.load_state(LoaderState::from_json(nlohmann::json::parse(saved)));
    EXPECT_EQ(resumed.state(), first.state());
    for (int i = 0; i < 6; ++i) {
      const Batch b = resumed.next();
      EXPECT_EQ(b.tokens().to_vector<int64_t>(), expected[i]) << "batch " << i << " after resume";
    }
    EXPECT_EQ(resumed.state().epoch, 1);
  }
}

TEST(Loader, RefusesAStateFromOtherSettings) {
  auto ds = std::make_shared<CountingDataset>(40, 2);
  Loader a(ds, opts(4, 1)), b(ds, opts(4, 2)), c(ds, opts(2, 1));
  std::string msg = longnet::testing::error_message([&] { b.load_state(a.state()); });
  EXPECT_NE(msg.find("taken with seed 1 but this loader has 2"), std::string::npos) << msg;
  msg = longnet::testing::error_message([&] { c.load_state(a.state()); });
  EXPECT_NE(msg.find("batch size 4 but this loader has 2"), std::string::npos) << msg;
  LoaderState far = a.state();
  far.batch = 10;
  EXPECT_NE(longnet::testing::error_message([&] { a.load_state(far); }).find("outside an epoch of 10 batches"), std::string::npos);
  EXPECT_NE(longnet::testing::error_message([&] { LoaderState::from_json({{"epoch", 1}}); }).find("invalid saved loader state"),
            std::string::npos);
}

TEST(Loader, ErrorsAreClear) {
  auto ds = std::make_shared<CountingDataset>(5, 2);
  std::string msg = longnet::testing::error_message([&] { Loader(ds, opts(3, 0, 0, 2)); });
  EXPECT_NE(msg.find("5 examples, fewer than one global batch (batch size 3 x 2 data-parallel ranks = 6)"),
            std::string::npos) << msg;
  EXPECT_NE(longnet::testing::error_message([&] { Loader(ds, opts(1, 0, 2, 2)); }).find("rank 2 is outside [0, 2)"), std::string::npos);
  // An error while preparing a batch in the background surfaces at next().
  auto failing = std::make_shared<CountingDataset>(8, 2, 3);
  LoaderOptions o = opts(8, 0);
  o.shuffle = false;
  Loader loader(failing, o);
  EXPECT_NE(longnet::testing::error_message([&] { loader.next(); }).find("cannot read example 3"), std::string::npos);
#ifndef LONGNET_WITH_CUDA
  LoaderOptions gpu = opts(1, 0);
  gpu.device = Device::cuda(0);
  EXPECT_NE(longnet::testing::error_message([&] { Loader(ds, gpu); }).find("need a build with the CUDA backend"), std::string::npos);
#endif
}

TEST(LoaderGpu, PinnedUploadsMatchTheCpuBatches) {
  LN_REQUIRE_GPU();
  auto ds = std::make_shared<CountingDataset>(100, 33);
  LoaderOptions gpu = opts(4, 3, 0, 1, 2);
  gpu.device = Device::cuda(0);
  Loader on_gpu(ds, gpu), on_cpu(ds, opts(4, 3, 0, 1, 2));
  for (int i = 0; i < 30; ++i) {
    const Batch g = on_gpu.next(), c = on_cpu.next();
    EXPECT_TRUE(g.tokens().device().is_cuda());
    EXPECT_EQ(g.tokens().to_vector<int64_t>(), c.tokens().to_vector<int64_t>()) << "batch " << i;
    EXPECT_EQ(g.targets().to_vector<int64_t>(), c.targets().to_vector<int64_t>());
  }
}

}  // namespace
}  // namespace longnet::data
