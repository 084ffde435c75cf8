// Language-model windows (random, document-aware, within one document) and doc2text pairs.
#include <gtest/gtest.h>

#include <set>

#include "data/dataset.h"
#include "framework/core/error.h"
#include "tests/data/data_test_util.h"
#include "tests/support/gradcheck.h"

namespace longnet::data {
namespace {

using testing::TempDir;

// A store whose documents have the given lengths (EOS excluded); token t of the joined stream
// is 4 + t % 1000 unless it is an EOS, so windows are easy to locate.
std::shared_ptr<TokenStore> store_with(const TempDir& dir, const std::vector<int64_t>& lengths,
                                       const std::string& name = "s.h5") {
  StoreHeader h;
  h.vocab_size = 1004;
  h.tokenizer_hash = "test";
  TokenStoreWriter w(dir.file(name), h);
  int64_t pos = 0;
  for (int64_t n : lengths) {
    std::vector<int32_t> doc;
    for (int64_t i = 0; i < n; ++i) doc.push_back(static_cast<int32_t>(4 + (pos + i) % 1000));
    pos += n + 1;
    w.add_document(doc);
  }
  w.commit();
  return TokenStore::open(dir.file(name));
}

std::vector<int64_t> window(const Dataset& d, uint64_t seed, int64_t epoch, int64_t index) {
  std::vector<int64_t> out(static_cast<size_t>(d.fields()[0].length));
  int64_t* p = out.data();
  d.get(seed, epoch, index, std::span<int64_t* const>(&p, 1));
  return out;
}

std::vector<int64_t> stream_slice(const TokenStore& s, int64_t start, int64_t n) {
  std::vector<int64_t> out(static_cast<size_t>(n));
  s.read(start, n, out.data());
  return out;
}

TEST(WindowDataset, RandomWindowsAreDeterministicSlicesThatMoveEachEpoch) {
  TempDir dir;
  auto store = store_with(dir, {100, 50, 300});
  const WindowDataset d(store, 15, WindowMode::kRandom);
  EXPECT_EQ(d.size(), 453 / 16);
  EXPECT_EQ(d.fields()[0].name, "tokens");
  EXPECT_EQ(d.fields()[0].length, 16);
  std::set<int64_t> starts;
  int moved = 0;
  for (int64_t i = 0; i < d.size(); ++i) {
    const int64_t s = d.window_start(7, 0, i);
    ASSERT_GE(s, 0);
    ASSERT_LE(s, 453 - 16);
    EXPECT_EQ(window(d, 7, 0, i), stream_slice(*store, s, 16));
    EXPECT_EQ(d.window_start(7, 0, i), s);
    moved += d.window_start(7, 1, i) != s;
    starts.insert(s);
  }
  EXPECT_GT(starts.size(), 20u);
  EXPECT_GT(moved, 20);
}

TEST(WindowDataset, DocumentWindowsStartAtDocumentsUnlessTheyMust) {
  TempDir dir;
  // Lengths with EOS: 3, 10, 4, 25 -> documents begin at 0, 3, 13, 17; 42 tokens in all.
  auto store = store_with(dir, {2, 9, 3, 24});
  const WindowDataset doc(store, 7, WindowMode::kDocumentStart);
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < doc.size(); ++i) starts.push_back(doc.window_start(0, 0, i));
  // Short documents run on into the next; long ones also at multiples of 8 and at their tail.
  EXPECT_EQ(starts, (std::vector<int64_t>{0, 3, 5, 13, 17, 25, 33, 34}));
  const WindowDataset within(store, 7, WindowMode::kWithinDocument);
  starts.clear();
  for (int64_t i = 0; i < within.size(); ++i) starts.push_back(within.window_start(0, 0, i));
  EXPECT_EQ(starts, (std::vector<int64_t>{3, 5, 17, 25, 33, 34}));
  // A window inside a document never contains that document's successor: EOS only at the end.
  for (int64_t i = 0; i < within.size(); ++i) {
    const auto w = window(within, 0, 0, i);
    for (size_t k = 0; k + 1 < w.size(); ++k) EXPECT_NE(w[k], SpecialIds::eos) << "window " << i;
  }
  // The last short document is pulled back so its window fits.
  auto tail_store = store_with(dir, {30, 2}, "tail.h5");
  const WindowDataset tail(tail_store, 7, WindowMode::kDocumentStart);
  EXPECT_EQ(tail.window_start(0, 0, tail.size() - 1), 34 - 8);
}

TEST(WindowDataset, SequenceLongerThanEveryDocumentIsAnError) {
  TempDir dir;
  auto store = store_with(dir, {10, 20, 30});
  const std::string msg = longnet::testing::error_message([&] { WindowDataset(store, 40, WindowMode::kWithinDocument); });
  EXPECT_NE(msg.find("seq_len 40 (windows of 41 tokens) is longer than every document"), std::string::npos) << msg;
  EXPECT_NE(msg.find("longest: 31 tokens"), std::string::npos) << msg;
  EXPECT_NO_THROW(WindowDataset(store, 40, WindowMode::kDocumentStart));
  EXPECT_NE(longnet::testing::error_message([&] { WindowDataset(store, 100, WindowMode::kRandom); }).find("fewer than one window"),
            std::string::npos);
  EXPECT_THROW(window_mode_from_string("sliding"), Error);
  EXPECT_EQ(window_mode_from_string(window_mode_name(WindowMode::kWithinDocument)), WindowMode::kWithinDocument);
}

TEST(WindowDataset, LongDocumentWindowsOfHundredsOfThousandsOfTokens) {
  TempDir dir;
  auto store = store_with(dir, {1000, 450000, 2000});
  const int64_t n = 262144;
  const WindowDataset d(store, n, WindowMode::kWithinDocument);
  ASSERT_EQ(d.size(), 2);  // the start of the long document, and its tail
  const int64_t begin = 1001, length = 450001;
  EXPECT_EQ(d.window_start(0, 0, 0), begin);
  EXPECT_EQ(d.window_start(0, 0, 1), begin + length - (n + 1));
  const auto w = window(d, 0, 0, 1);
  EXPECT_EQ(w.back(), SpecialIds::eos);
  EXPECT_EQ(w.front(), 4 + (begin + length - (n + 1)) % 1000);
  EXPECT_EQ(w, stream_slice(*store, begin + length - (n + 1), n + 1));
}

TEST(DocToTextDataset, PadsAndCutsSourcesAndTargets) {
  TempDir dir;
  StoreHeader h;
  h.vocab_size = 100;
  h.task = "doc2text";
  TokenStoreWriter w(dir.file("d.h5"), h);
  w.add_pair(std::vector<int32_t>{10, 11, 12, 13, 14, 15}, std::vector<int32_t>{20, 21});
  w.add_pair(std::vector<int32_t>{16}, std::vector<int32_t>{22, 23, 24, 25, 26});
  w.commit();
  const DocToTextDataset d(TokenStore::open(dir.file("d.h5")), 4, 4);
  ASSERT_EQ(d.size(), 2);
  ASSERT_EQ(d.fields().size(), 2u);
  EXPECT_EQ(d.fields()[0].name, "source");
  EXPECT_EQ(d.fields()[1].length, 5);
  std::vector<int64_t> source(4), target(5);
  int64_t* out[] = {source.data(), target.data()};
  d.get(0, 0, 0, out);
  EXPECT_EQ(source, (std::vector<int64_t>{10, 11, 12, 13}));  // cut
  EXPECT_EQ(target, (std::vector<int64_t>{SpecialIds::bos, 20, 21, SpecialIds::eos, SpecialIds::pad}));
  d.get(0, 0, 1, out);
  EXPECT_EQ(source, (std::vector<int64_t>{16, SpecialIds::eos, SpecialIds::pad, SpecialIds::pad}));
  EXPECT_EQ(target, (std::vector<int64_t>{SpecialIds::bos, 22, 23, 24, 25}));
  const std::string msg = longnet::testing::error_message([&] { DocToTextDataset(store_with(dir, {5}), 4, 4); });
  EXPECT_NE(msg.find("is not a doc2text store"), std::string::npos) << msg;
  EXPECT_THROW(WindowDataset(TokenStore::open(dir.file("d.h5")), 2, WindowMode::kRandom), Error);
}

}  // namespace
}  // namespace longnet::data
