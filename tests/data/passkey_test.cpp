// Passkey retrieval: example layout, depth, the evaluation grid, training fields and scoring.
#include <gtest/gtest.h>

#include "data/passkey.h"
#include "data/prepare.h"
#include "framework/core/error.h"
#include "tests/data/data_test_util.h"

namespace longnet::data {
namespace {

using testing::TempDir;

// A filler store made from the system licenses with the shared tokenizer.
struct Filler {
  TempDir dir;
  std::shared_ptr<PasskeyTask> task;
  Filler() {
    const std::string model = dir.file("tok.model");
    write_file_atomic(model, testing::shared_tokenizer().bytes());
    PrepareOptions o;
    o.corpus = testing::licenses_corpus();
    o.tokenizer = model;
    o.output_dir = dir.file("store");
    o.val_fraction = 0;
    std::ostringstream log;
    prepare_store(o, log);
    task = std::make_shared<PasskeyTask>(TokenStore::open(dir.file("store/train.h5")),
                                         testing::shared_tokenizer());
  }
};

const Filler& filler() {
  static const Filler f;
  return f;
}

TEST(Passkey, ExamplesHaveTheRequestedLengthAndDepth) {
  const PasskeyTask& task = *filler().task;
  const Tokenizer& tok = task.tokenizer();
  for (double depth : {0.0, 0.25, 0.5, 1.0}) {
    const PasskeyExample ex = task.make(3000, depth, 1, 0);
    ASSERT_EQ(static_cast<int64_t>(ex.prompt.size() + ex.answer.size()), 3000);
    EXPECT_EQ(ex.passkey.size(), 5u);
    EXPECT_NE(ex.passkey[0], '0');
    EXPECT_EQ(tok.decode(ex.answer), " " + ex.passkey);
    const std::string prompt = tok.decode(ex.prompt);
    EXPECT_EQ(prompt.rfind("There is important information hidden", 0), 0u);
    EXPECT_TRUE(prompt.ends_with("What is the pass key? The pass key is")) << prompt.substr(prompt.size() - 60);
    const std::string needle = "The pass key is " + ex.passkey + ". Remember it. " + ex.passkey + " is the pass key.";
    EXPECT_NE(prompt.find(needle), std::string::npos);
    // The needle sits at `depth` of the filler.
    const std::string before = tok.decode(std::span<const int32_t>(ex.prompt.data(), ex.needle_position));
    const double at = static_cast<double>(prompt.find(needle)) / static_cast<double>(prompt.size());
    EXPECT_NEAR(at, depth, 0.05) << "depth " << depth;
    EXPECT_EQ(prompt.find(needle), before.size() + 1);  // after the needle's newline
    for (int32_t id : ex.prompt) ASSERT_NE(id, SpecialIds::eos);
  }
  // Fixed seed and index fix the example; another index changes the key.
  EXPECT_EQ(task.make(2000, 0.5, 1, 3).prompt, task.make(2000, 0.5, 1, 3).prompt);
  EXPECT_NE(task.make(2000, 0.5, 1, 3).passkey, task.make(2000, 0.5, 1, 4).passkey);
}

TEST(Passkey, LongExamplesWrapAroundTheFiller) {
  const PasskeyTask& task = *filler().task;
  const int64_t length = 400000;  // longer than the whole filler store
  const PasskeyExample ex = task.make(length, 0.9, 2, 0);
  EXPECT_EQ(static_cast<int64_t>(ex.prompt.size() + ex.answer.size()), length);
  EXPECT_NEAR(static_cast<double>(ex.needle_position) / length, 0.9, 0.01);
}

TEST(Passkey, GridCoversLengthsTimesDepths) {
  const PasskeyTask& task = *filler().task;
  const auto grid = passkey_grid(task, {500, 1000}, {0.0, 0.5, 1.0}, 2, 7);
  ASSERT_EQ(grid.size(), 12u);
  EXPECT_EQ(grid[0].length, 500);
  EXPECT_EQ(grid[11].length, 1000);
  EXPECT_EQ(grid[2].depth, 0.5);
  EXPECT_NE(grid[0].passkey, grid[1].passkey);
  const auto again = passkey_grid(task, {500, 1000}, {0.0, 0.5, 1.0}, 2, 7);
  for (size_t i = 0; i < grid.size(); ++i) EXPECT_EQ(grid[i].prompt, again[i].prompt);
  EXPECT_THROW(task.make(task.min_length() - 1, 0.5, 0, 0), Error);
  EXPECT_NO_THROW(task.make(task.min_length(), 0.5, 0, 0));
  EXPECT_THROW(task.make(1000, 1.5, 0, 0), Error);
}

TEST(Passkey, DatasetMarksTheAnswerTokens) {
  auto task = filler().task;
  const PasskeyDataset d(task, 1023, 100);
  ASSERT_EQ(d.fields().size(), 2u);
  std::vector<int64_t> tokens(1024), mask(1024);
  int64_t* out[] = {tokens.data(), mask.data()};
  d.get(3, 1, 7, out);
  int64_t ones = 0, first = -1;
  for (int64_t i = 0; i < 1024; ++i) {
    ones += mask[i];
    if (mask[i] && first < 0) first = i;
  }
  EXPECT_EQ(first + ones, 1024);  // the answer is the tail
  std::vector<int32_t> answer(tokens.begin() + first, tokens.end());
  const std::string key = task->tokenizer().decode(answer).substr(1);
  EXPECT_EQ(key.size(), 5u);
  std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + first);
  EXPECT_NE(task->tokenizer().decode(prompt).find("The pass key is " + key + "."), std::string::npos);
  EXPECT_THROW(PasskeyDataset(task, 10, 5), Error);
}

TEST(Passkey, ScoringReadsTheFirstNumber) {
  const PasskeyTask& task = *filler().task;
  const Tokenizer& tok = task.tokenizer();
  const PasskeyExample ex = task.make(800, 0.3, 4, 0);
  EXPECT_TRUE(passkey_correct(tok, ex, tok.encode(" " + ex.passkey + ". The end")));
  EXPECT_TRUE(passkey_correct(tok, ex, ex.answer));
  EXPECT_FALSE(passkey_correct(tok, ex, tok.encode(" 1" + ex.passkey)));
  EXPECT_FALSE(passkey_correct(tok, ex, tok.encode(" 42, then " + ex.passkey)));
  EXPECT_FALSE(passkey_correct(tok, ex, tok.encode(" no idea")));
}

TEST(Passkey, RefusesAStoreFromAnotherTokenizer) {
  TempDir dir;
  StoreHeader h;
  h.vocab_size = testing::shared_tokenizer().vocab_size();
  h.tokenizer_hash = "other";
  TokenStoreWriter w(dir.file("x.h5"), h);
  w.add_document(std::vector<int32_t>{10, 11});
  w.commit();
  EXPECT_THROW(PasskeyTask(TokenStore::open(dir.file("x.h5")), testing::shared_tokenizer()), Error);
}

}  // namespace
}  // namespace longnet::data
