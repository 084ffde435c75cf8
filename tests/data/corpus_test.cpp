// Reading corpora: files, folders, JSONL, and every way an input can be unusable.
#include <gtest/gtest.h>

#include <filesystem>
#include <unistd.h>

#include "data/corpus.h"
#include "data/utf8.h"
#include "framework/core/error.h"
#include "tests/data/data_test_util.h"
#include "tests/support/gradcheck.h"

namespace longnet::data {
namespace {

using testing::TempDir;

std::vector<Document> read_all(CorpusReader& reader) {
  std::vector<Document> docs;
  Document d;
  while (reader.next(d)) docs.push_back(d);
  return docs;
}

// Runs fn, expects a longnet::Error, and returns its message.
TEST(Corpus, ReadsFoldersRecursivelyInSortedOrderWithSuffixFilter) {
  TempDir dir;
  dir.write("b.txt", "second");
  dir.write("a.txt", "first");
  dir.write("sub/c.txt", "third");
  dir.write("notes.md", "not wanted");
  CorpusOptions options;
  options.inputs = {dir.path().string()};
  options.suffixes = {".txt"};
  CorpusReader reader(options);
  EXPECT_EQ(reader.files().size(), 3u);
  EXPECT_EQ(reader.total_bytes(), 6u + 5u + 5u);
  EXPECT_EQ(reader.count_candidates(), 3);
  const auto docs = read_all(reader);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "first");
  EXPECT_EQ(docs[1].text, "second");
  EXPECT_EQ(docs[2].text, "third");
  EXPECT_EQ(docs[2].origin, dir.file("sub/c.txt"));
  EXPECT_EQ(docs[2].ordinal, 2);
  EXPECT_EQ(reader.stats().documents, 3);
  EXPECT_EQ(reader.stats().document_bytes, 16u);
}

TEST(Corpus, ReadsJsonlOneDocumentPerLineFromANamedField) {
  TempDir dir;
  const std::string path = dir.write(
      "docs.jsonl",
      "{\"id\": 1, \"body\": \"line one\\nand more\"}\n"
      "\n"
      "{\"id\": 2, \"body\": \"caf\\u00e9\"}\n"
      "{\"id\": 3, \"body\": \"   \"}\n");
  CorpusOptions options;
  options.inputs = {path};
  options.text_field = "body";
  CorpusReader reader(options);
  EXPECT_EQ(reader.count_candidates(), 4);
  const auto docs = read_all(reader);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].text, "line one\nand more");
  EXPECT_EQ(docs[0].origin, path + ":1");
  EXPECT_EQ(docs[1].text, "caf\xC3\xA9");
  EXPECT_EQ(docs[1].ordinal, 2);
  EXPECT_EQ(reader.stats().empty_skipped, 2);  // the blank line and the whitespace-only body
}

TEST(Corpus, MalformedJsonlNamesTheLine) {
  TempDir dir;
  const std::string path = dir.write("bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
  CorpusOptions options;
  options.inputs = {path};
  CorpusReader reader(options);
  Document d;
  EXPECT_TRUE(reader.next(d));
  const std::string msg = longnet::testing::error_message([&] { reader.next(d); });
  EXPECT_NE(msg.find(path + ":2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not a JSON object"), std::string::npos) << msg;

  const std::string other = dir.write("other.jsonl", "{\"content\": \"x\"}\n");
  options.inputs = {other};
  CorpusReader missing_field(options);
  const std::string msg2 = longnet::testing::error_message([&] { missing_field.next(d); });
  EXPECT_NE(msg2.find("no string field \"text\""), std::string::npos) << msg2;
}

TEST(Corpus, InvalidUtf8ReportsFileAndByteOffsetOrIsSkippedWithACount) {
  TempDir dir;
  dir.write("a.txt", "good text");
  const std::string bad = dir.write("b.txt", std::string("0123456789\xC3(tail"));
  dir.write("c.txt", "more good text");
  CorpusOptions options;
  options.inputs = {dir.path().string()};
  {
    CorpusReader reader(options);
    Document d;
    EXPECT_TRUE(reader.next(d));
    const std::string msg = longnet::testing::error_message([&] { reader.next(d); });
    EXPECT_NE(msg.find("invalid UTF-8 in " + bad + " at byte offset 10"), std::string::npos) << msg;
  }
  options.invalid_utf8 = InvalidUtf8::kSkip;
  CorpusReader reader(options);
  const auto docs = read_all(reader);
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[1].text, "more good text");
  EXPECT_EQ(reader.stats().invalid_skipped, 1);
}

TEST(Corpus, InvalidUtf8InJsonlCountsTheFileOffset) {
  TempDir dir;
  const std::string first = "{\"text\": \"fine\"}\n";
  const std::string path = dir.write("x.jsonl", first + "{\"text\": \"ab\xFF\"}\n");
  CorpusOptions options;
  options.inputs = {path};
  CorpusReader reader(options);
  Document d;
  EXPECT_TRUE(reader.next(d));
  const std::string msg = longnet::testing::error_message([&] { reader.next(d); });
  const size_t offset = first.size() + std::string("{\"text\": \"ab").size();
  EXPECT_NE(msg.find(path + ":2 at byte offset " + std::to_string(offset)), std::string::npos) << msg;
}

TEST(Corpus, EmptyDocumentsAreSkippedAndAllEmptyIsAnError) {
  TempDir dir;
  dir.write("a.txt", "");
  dir.write("b.txt", " \n\t\n");
  dir.write("c.txt", "content");
  CorpusOptions options;
  options.inputs = {dir.path().string()};
  CorpusReader reader(options);
  EXPECT_EQ(read_all(reader).size(), 1u);
  EXPECT_EQ(reader.stats().empty_skipped, 2);
  EXPECT_NO_THROW(reader.require_documents());

  std::filesystem::remove(dir.file("c.txt"));
  CorpusReader empty(options);
  EXPECT_TRUE(read_all(empty).empty());
  const std::string msg = longnet::testing::error_message([&] { empty.require_documents(); });
  EXPECT_NE(msg.find("no usable document"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 empty"), std::string::npos) << msg;
}

TEST(Corpus, MissingOrUnreadableInputsAreErrors) {
  TempDir dir;
  CorpusOptions options;
  options.inputs = {dir.file("nope.txt")};
  std::string msg = longnet::testing::error_message([&] { CorpusReader r(options); });
  EXPECT_NE(msg.find("cannot read " + dir.file("nope.txt")), std::string::npos) << msg;

  options.inputs = {};
  msg = longnet::testing::error_message([&] { CorpusReader r(options); });
  EXPECT_NE(msg.find("no input"), std::string::npos) << msg;

  dir.write("only.md", "x");
  options.inputs = {dir.path().string()};
  options.suffixes = {".txt"};
  msg = longnet::testing::error_message([&] { CorpusReader r(options); });
  EXPECT_NE(msg.find("no files found"), std::string::npos) << msg;

  if (::geteuid() != 0) {  // root reads anything
    const std::string locked = dir.write("locked.txt", "secret");
    std::filesystem::permissions(locked, std::filesystem::perms::none);
    options.inputs = {locked};
    options.suffixes = {};
    msg = longnet::testing::error_message([&] { CorpusReader r(options); });
    EXPECT_NE(msg.find("cannot read " + locked), std::string::npos) << msg;
  }
}

TEST(Corpus, ReadsTheSystemLicenses) {
  CorpusReader reader(testing::licenses_corpus());
  const auto docs = read_all(reader);
  EXPECT_GE(docs.size(), 10u);
  EXPECT_EQ(reader.stats().bytes_read, reader.total_bytes());
}

TEST(Corpus, DefaultCorpusNamesThePythonDocs) {
  if (!std::filesystem::is_directory(kDefaultCorpusDir)) {
    const std::string msg = longnet::testing::error_message([] { default_corpus_options(); });
    EXPECT_NE(msg.find("setup.sh"), std::string::npos);
    GTEST_SKIP() << "python3.11-doc not installed";
  }
  const CorpusOptions options = default_corpus_options();
  CorpusReader reader(options);
  EXPECT_GT(reader.files().size(), 400u);
  for (const CorpusFile& f : reader.files()) {
    ASSERT_TRUE(f.path.ends_with(".rst.txt")) << f.path;
  }
}

TEST(Corpus, SplitForTrainingKeepsEveryByteUnderTheLimit) {
  std::string text = "short line\nanother short line\n";
  text += std::string(50, 'x') + " " + std::string(30, 'y') + "\n";  // one over-long line
  text += "caf\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9";  // no newline
  const auto pieces = split_for_training(text, 16);
  std::string joined;
  for (const auto& p : pieces) {
    EXPECT_LE(p.size(), 16u) << p;
    EXPECT_FALSE(p.empty());
    joined += p;
  }
  EXPECT_EQ(joined, text);
  // Lines that fit are grouped whole; a line is cut at a space when there is one.
  EXPECT_EQ(pieces[0], "short line\n");
  const auto pieces40 = split_for_training(text, 40);
  EXPECT_EQ(pieces40[0], "short line\nanother short line\n");
  EXPECT_EQ(pieces40[1].size(), 40u);  // the x-run has no space in its first 40 bytes
  for (const auto& p : split_for_training(text, 5)) EXPECT_EQ(first_invalid_utf8(p), kValidUtf8) << p;
}

}  // namespace
}  // namespace longnet::data
