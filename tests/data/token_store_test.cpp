// The HDF5 token store: round trips, layout, atomic writes, and damaged or mismatched files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "data/random.h"
#include "data/token_store.h"
#include "framework/core/error.h"
#include "tests/data/data_test_util.h"
#include "tests/support/gradcheck.h"

namespace longnet::data {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Documents of pseudo-random ids in [4, vocab), lengths from the list.
std::vector<std::vector<int32_t>> make_docs(const std::vector<int>& lengths, int64_t vocab, uint64_t seed) {
  std::vector<std::vector<int32_t>> docs;
  uint64_t k = 0;
  for (int n : lengths) {
    std::vector<int32_t> d;
    for (int i = 0; i < n; ++i) {
      d.push_back(static_cast<int32_t>(4 + random_below(vocab - 4, seed, RandomStream::kWindow, k++)));
    }
    docs.push_back(d);
  }
  return docs;
}

StoreHeader header(int64_t vocab, const std::string& hash = "feedbeef") {
  StoreHeader h;
  h.vocab_size = vocab;
  h.tokenizer_hash = hash;
  h.source = "unit test";
  return h;
}

std::string write_store(const std::string& path, const std::vector<std::vector<int32_t>>& docs,
                        const StoreHeader& h) {
  TokenStoreWriter w(path, h);
  for (const auto& d : docs) w.add_document(d);
  w.commit();
  return path;
}

TEST(TokenStore, RoundTripsDocumentsAndWindows) {
  TempDir dir;
  for (int64_t vocab : {1000, 70000}) {
    // Enough tokens to span several 1 MiB chunks.
    const auto docs = make_docs({5, 0, 300000, 17, 250000, 1}, vocab, 7);
    const std::string path = write_store(dir.file("s" + std::to_string(vocab) + ".h5"), docs, header(vocab));
    for (uint64_t preload : {uint64_t{0}, uint64_t{1} << 30}) {
      auto store = TokenStore::open(path, {preload});
      const StoreInfo& info = store->info();
      EXPECT_EQ(info.token_bits, vocab <= 65536 ? 16 : 32);
      EXPECT_EQ(info.format_version, kStoreFormatVersion);
      EXPECT_EQ(info.header.vocab_size, vocab);
      EXPECT_EQ(info.header.eos_id, SpecialIds::eos);
      EXPECT_EQ(info.header.tokenizer_hash, "feedbeef");
      EXPECT_EQ(info.header.split, "train");
      EXPECT_EQ(store->num_documents(), 6);
      // Reference: the documents joined, each followed by EOS.
      std::vector<int64_t> joined;
      std::vector<uint64_t> offsets = {0};
      for (const auto& d : docs) {
        joined.insert(joined.end(), d.begin(), d.end());
        joined.push_back(SpecialIds::eos);
        offsets.push_back(joined.size());
      }
      EXPECT_EQ(store->num_tokens(), static_cast<int64_t>(joined.size()));
      EXPECT_EQ(store->doc_offsets(), offsets);
      for (int64_t i = 0; i < 6; ++i) {
        auto expect = docs[i];
        expect.push_back(SpecialIds::eos);
        ASSERT_EQ(store->document(i), expect) << "document " << i;
      }
      // A window across a chunk boundary and several documents.
      const int64_t start = 524288 - 1000, count = 20000;
      std::vector<int64_t> window(count);
      store->read(start, count, window.data());
      EXPECT_TRUE(std::equal(window.begin(), window.end(), joined.begin() + start));
      EXPECT_NO_THROW(store->verify());
      EXPECT_THROW(store->read(joined.size() - 2, 3, window.data()), Error);
    }
  }
}

TEST(TokenStore, WritesNothingUntilCommitAndCleansUpOnFailure) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  {
    TokenStoreWriter w(path, header(100));
    w.add_document(std::vector<int32_t>{5, 6, 7});
    EXPECT_FALSE(fs::exists(path));
    EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
    const std::string msg = longnet::testing::error_message([&] { w.add_document(std::vector<int32_t>{5, 100}); });
    EXPECT_NE(msg.find("token id 100 is outside the vocabulary [0, 100)"), std::string::npos) << msg;
  }  // abandoned: the temporary file goes away
  EXPECT_TRUE(fs::is_empty(dir.path()));
  {
    TokenStoreWriter w(path, header(100));
    w.add_document(std::vector<int32_t>{5, 6, 7});
    w.commit();
  }
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

TEST(TokenStore, Doc2TextStoresTargetsAlignedWithDocuments) {
  TempDir dir;
  StoreHeader h = header(500);
  h.task = "doc2text";
  const std::string path = dir.file("d.h5");
  {
    TokenStoreWriter w(path, h);
    w.add_pair(std::vector<int32_t>{10, 11, 12}, std::vector<int32_t>{20});
    w.add_pair(std::vector<int32_t>{13}, std::vector<int32_t>{21, 22});
    EXPECT_THROW(w.add_document(std::vector<int32_t>{1}), Error);
    w.commit();
  }
  auto store = TokenStore::open(path);
  EXPECT_EQ(store->info().header.task, "doc2text");
  EXPECT_EQ(store->document(1), (std::vector<int32_t>{13, SpecialIds::eos}));
  EXPECT_EQ(store->target(0), (std::vector<int32_t>{20, SpecialIds::eos}));
  EXPECT_EQ(store->target(1), (std::vector<int32_t>{21, 22, SpecialIds::eos}));
  EXPECT_EQ(store->info().num_target_tokens, 5);
}

TEST(TokenStore, MissingTruncatedAndCorruptFilesAreClearErrors) {
  TempDir dir;
  const std::string path = write_store(dir.file("ok.h5"), make_docs({2000, 3000}, 60000, 1), header(60000));
  std::string msg = longnet::testing::error_message([&] { TokenStore::open(dir.file("none.h5")); });
  EXPECT_NE(msg.find("cannot read " + dir.file("none.h5")), std::string::npos) << msg;

  const std::string text = dir.write("text.h5", "just some text\n");
  msg = longnet::testing::error_message([&] { TokenStore::open(text); });
  EXPECT_NE(msg.find("is not an HDF5 file"), std::string::npos) << msg;

  // Cut the file in half: HDF5 sees the end-of-file address beyond the real end.
  const std::string truncated = dir.file("truncated.h5");
  fs::copy_file(path, truncated);
  fs::resize_file(truncated, fs::file_size(path) / 2);
  msg = longnet::testing::error_message([&] { TokenStore::open(truncated); });
  EXPECT_NE(msg.find("cannot open " + truncated + ": the file is truncated or corrupt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(HDF5: "), std::string::npos) << msg;

  // Damage the signature.
  const std::string damaged = dir.file("damaged.h5");
  fs::copy_file(path, damaged);
  {
    std::fstream f(damaged, std::ios::in | std::ios::out | std::ios::binary);
    f.write("\0\0\0\0", 4);
  }
  msg = longnet::testing::error_message([&] { TokenStore::open(damaged); });
  EXPECT_NE(msg.find("is not an HDF5 file"), std::string::npos) << msg;
}

TEST(TokenStore, VerifyCatchesFlippedTokenBytes) {
  TempDir dir;
  // Every token is 0x3039, so the token data is easy to find in the file.
  std::vector<std::vector<int32_t>> docs = {std::vector<int32_t>(5000, 0x3039)};
  const std::string path = write_store(dir.file("v.h5"), docs, header(60000));
  EXPECT_NE(TokenStore::open(path)->verify().find("checksum matches"), std::string::npos);
  std::string bytes;
  {
    std::ifstream f(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  const size_t at = bytes.find(std::string("\x39\x30\x39\x30\x39\x30\x39\x30", 8));
  ASSERT_NE(at, std::string::npos);
  bytes[at + 100] = 0x31;  // one token becomes 0x3031
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << bytes;
  }
  auto store = TokenStore::open(path);
  const std::string msg = longnet::testing::error_message([&] { store->verify(); });
  EXPECT_NE(msg.find("do not match their checksum"), std::string::npos) << msg;
}

TEST(TokenStore, TokenizerMismatchIsAnError) {
  TempDir dir;
  const Tokenizer& tok = testing::shared_tokenizer();
  const std::string path = write_store(dir.file("t.h5"), make_docs({50}, tok.vocab_size(), 2),
                                       header(tok.vocab_size(), "0123456789abcdef0123"));
  auto store = TokenStore::open(path);
  const std::string msg = longnet::testing::error_message([&] { store->require_tokenizer(tok); });
  EXPECT_NE(msg.find("was tokenised with another tokenizer (sha256 0123456789ab...)"), std::string::npos) << msg;
  EXPECT_NE(msg.find(tok.hash().substr(0, 12)), std::string::npos) << msg;

  const std::string good = write_store(dir.file("g.h5"), make_docs({50}, tok.vocab_size(), 2),
                                       header(tok.vocab_size(), tok.hash()));
  EXPECT_NO_THROW(TokenStore::open(good)->require_tokenizer(tok));
  const std::string summary = TokenStore::open(good)->summary();
  EXPECT_NE(summary.find("documents       1"), std::string::npos) << summary;
  EXPECT_NE(summary.find(tok.hash()), std::string::npos) << summary;
}

}  // namespace
}  // namespace longnet::data
