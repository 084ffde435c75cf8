// Training, encoding and decoding with SentencePiece; the model hash; training errors.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <gtest/gtest.h>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "data/sha256.h"
#include "data/special_ids.h"
#include "data/tokenizer.h"
#include "framework/core/error.h"
#include "tests/data/data_test_util.h"
#include "tests/support/gradcheck.h"

namespace longnet::data {
namespace {

using testing::TempDir;

std::string train_on(const std::string& path, TokenizerTrainOptions o) {
  CorpusOptions c;
  c.inputs = {path};
  CorpusReader reader(c);
  return train_tokenizer(reader, o);
}

TEST(WriteFileAtomic, MakesTheFolderAndLeavesNoTemporary) {
  TempDir dir;
  const std::filesystem::path target = dir.path() / "new" / "run" / "tokenizer.model";
  write_file_atomic(target.string(), "bytes");
  std::ifstream in(target);
  std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, "bytes");
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(target.parent_path())) ++files;
  EXPECT_EQ(files, 1u);
}

TEST(Tokenizer, RoundTripsTextExactly) {
  const Tokenizer& tok = testing::shared_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 800);
  EXPECT_TRUE(tok.byte_fallback());
  EXPECT_EQ(tok.spec().model_type, "bpe");
  EXPECT_EQ(tok.spec().normalization, "identity");
  EXPECT_FALSE(tok.spec().remove_extra_whitespaces);
  const std::vector<std::string> samples = {
      "The GNU General Public License is a free, copyleft license.",
      "  leading spaces, double  spaces and a trailing space ",
      "tabs\tand\r\nwindows line ends\n\n\nblank lines",
      "Unicode: caf\xC3\xA9, \xCE\xB1\xCE\xB2\xCE\xB3, \xE4\xB8\xAD\xE6\x96\x87, emoji \xF0\x9F\x98\x80",
      "digits 1234567890 and code: if (x < 3) { return y; }",
      "",
  };
  for (const std::string& s : samples) {
    const auto ids = tok.encode(s);
    for (int32_t id : ids) {
      EXPECT_NE(id, SpecialIds::unk) << "unknown piece in: " << s;
      EXPECT_GE(id, 0);
      EXPECT_LT(id, tok.vocab_size());
    }
    EXPECT_EQ(tok.decode(ids), s);
  }
  // A whole real document.
  const std::string gpl = read_file("/usr/share/common-licenses/GPL-3", "test");
  const auto ids = tok.encode(gpl);
  EXPECT_LT(ids.size(), gpl.size() / 2);  // merges were learnt
  EXPECT_EQ(tok.decode(ids), gpl);
}

TEST(Tokenizer, DigitsAreSingleTokens) {
  const Tokenizer& tok = testing::shared_tokenizer();
  // Each digit stands alone (as a digit piece, or a byte piece where it was too rare for one).
  const auto ids = tok.encode("98765");
  ASSERT_EQ(ids.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(tok.decode(std::vector<int32_t>{ids[i]}), std::string(1, "98765"[i]));
}

TEST(Tokenizer, LongTextsEncodeAsSentencePieceEncodesThemWhole) {
  // Reference: SentencePiece itself on the whole text, against the piecewise encoding.
  TokenizerTrainOptions unigram;
  unigram.model_type = "unigram";
  unigram.vocab_size = 800;
  unigram.threads = 1;
  const Tokenizer models[] = {
      testing::shared_tokenizer(),
      Tokenizer::from_bytes(train_on("/usr/share/common-licenses/GPL-3", unigram), "unigram")};
  std::string odd;  // space runs, tabs and newlines at the cut points
  for (int i = 0; i < 3000; ++i) odd += (i % 7 == 0) ? "x    \t y\n  " : "word  ";
  for (const Tokenizer& tok : models) {
    sentencepiece::SentencePieceProcessor sp;
    ASSERT_TRUE(sp.LoadFromSerializedProto(tok.bytes()).ok());
    CorpusReader licenses(testing::licenses_corpus());
    Document d;
    int long_docs = 0;
    while (licenses.next(d)) {
      std::vector<int> whole;
      ASSERT_TRUE(sp.Encode(d.text, &whole).ok());
      EXPECT_EQ(tok.encode(d.text), std::vector<int32_t>(whole.begin(), whole.end())) << tok.name() << " " << d.origin;
      long_docs += d.text.size() > 3 * 4096;
    }
    EXPECT_GT(long_docs, 3);
    std::vector<int> whole;
    ASSERT_TRUE(sp.Encode(odd, &whole).ok());
    EXPECT_EQ(tok.encode(odd), std::vector<int32_t>(whole.begin(), whole.end())) << tok.name();
    EXPECT_FALSE(tok.spec().add_dummy_prefix);
  }
}

TEST(Tokenizer, SpecialIdsAndHash) {
  const Tokenizer& tok = testing::shared_tokenizer();
  EXPECT_EQ(tok.piece(SpecialIds::pad), "<pad>");
  EXPECT_EQ(tok.piece(SpecialIds::unk), "<unk>");
  EXPECT_EQ(tok.piece(SpecialIds::bos), "<s>");
  EXPECT_EQ(tok.piece(SpecialIds::eos), "</s>");
  EXPECT_EQ(tok.hash(), sha256_hex(tok.bytes()));
  TempDir dir;
  write_file_atomic(dir.file("t.model"), tok.bytes());
  const Tokenizer loaded = Tokenizer::load(dir.file("t.model"));
  EXPECT_EQ(loaded.hash(), tok.hash());
  EXPECT_EQ(loaded.encode("free software"), tok.encode("free software"));
  EXPECT_NE(tokenizer_summary(loaded, 5).find(tok.hash()), std::string::npos);
}

TEST(Tokenizer, TrainingIsReproducibleWithASeedAndBothTypesWork) {
  TempDir dir;
  const std::string path = dir.write("corpus.txt", testing::english_text(20000, 1));
  TokenizerTrainOptions o;
  o.vocab_size = 320;
  o.threads = 2;
  for (const char* type : {"bpe", "unigram"}) {
    o.model_type = type;
    const std::string a = train_on(path, o);
    const std::string b = train_on(path, o);
    EXPECT_EQ(sha256_hex(a), sha256_hex(b)) << type;
    const Tokenizer t = Tokenizer::from_bytes(a, type);
    EXPECT_EQ(t.spec().model_type, type);
    EXPECT_EQ(t.vocab_size(), 320);
    const std::string text = testing::english_text(500, 99);
    EXPECT_EQ(t.decode(t.encode(text)), text);
  }
}

TEST(Tokenizer, LongLinesAreLearntNotDropped) {
  // A short document, and a 40 KB single-line document far over SentencePiece's sentence limit.
  // A word that appears only in the long one must still become a piece.
  std::string line;
  const std::string words = testing::english_text(40000, 3);
  for (size_t i = 0; i < words.size(); ++i) {
    line += words[i] == '\n' ? ' ' : words[i];
    if (i % 40 == 39) line += " zorblat";
  }
  TempDir dir;
  dir.write("a.txt", testing::english_text(3000, 4));
  dir.write("b.txt", line);
  TokenizerTrainOptions o;
  o.vocab_size = 400;
  o.threads = 1;
  const Tokenizer t = Tokenizer::from_bytes(train_on(dir.path().string(), o), "long");
  EXPECT_EQ(t.encode(" zorblat").size(), 1u);
}

TEST(Tokenizer, TooLargeAVocabularyIsAClearError) {
  TempDir dir;
  const std::string path = dir.write("small.txt", "a tiny corpus with few words\nand two lines\n");
  TokenizerTrainOptions o;
  o.vocab_size = 5000;
  o.threads = 1;
  for (const char* type : {"bpe", "unigram"}) {
    o.model_type = type;
    const std::string msg = longnet::testing::error_message([&] { train_on(path, o); });
    EXPECT_NE(msg.find("vocabulary size 5000 is larger than the corpus supports"), std::string::npos) << msg;
    EXPECT_NE(msg.find("at most"), std::string::npos) << msg;
  }
  o.vocab_size = 200;
  std::string msg = longnet::testing::error_message([&] { train_on(path, o); });
  EXPECT_NE(msg.find("256 byte pieces"), std::string::npos) << msg;
  o.vocab_size = 265;  // room for 5 of the corpus's 19 characters
  msg = longnet::testing::error_message([&] { train_on(path, o); });
  EXPECT_NE(msg.find("cannot hold the special ids, the 256 byte pieces and the corpus's characters"),
            std::string::npos) << msg;
  o.vocab_size = 1000;
  o.model_type = "wordpiece";
  EXPECT_NE(longnet::testing::error_message([&] { train_on(path, o); }).find("unknown model type"), std::string::npos);
}

TEST(Tokenizer, AllEmptyCorpusIsAnError) {
  TempDir dir;
  dir.write("a.txt", "   ");
  dir.write("b.txt", "\n\n");
  TokenizerTrainOptions o;
  o.vocab_size = 300;
  const std::string msg = longnet::testing::error_message([&] { train_on(dir.path().string(), o); });
  EXPECT_NE(msg.find("no usable document"), std::string::npos) << msg;
}

TEST(Tokenizer, BadModelFilesAreErrors) {
  TempDir dir;
  EXPECT_NE(longnet::testing::error_message([&] { Tokenizer::load(dir.file("missing.model")); }).find("cannot read"),
            std::string::npos);
  const std::string junk = dir.write("junk.model", "this is not a protobuf");
  EXPECT_NE(longnet::testing::error_message([&] { Tokenizer::load(junk); }).find("is not a SentencePiece model"),
            std::string::npos);
  // A model trained with SentencePiece's own defaults (unk 0, bos 1, eos 2, no pad).
  const std::string corpus = dir.write("c.txt", testing::english_text(5000, 2));
  std::string foreign;
  ASSERT_TRUE(sentencepiece::SentencePieceTrainer::Train(
                  {{"input", corpus}, {"vocab_size", "100"}, {"minloglevel", "2"}}, nullptr, &foreign)
                  .ok());
  const std::string msg = longnet::testing::error_message([&] { Tokenizer::from_bytes(foreign, "foreign.model"); });
  EXPECT_NE(msg.find("foreign.model has pad id -1 but this program uses 0"), std::string::npos) << msg;

  const Tokenizer& tok = testing::shared_tokenizer();
  EXPECT_NE(longnet::testing::error_message([&] { tok.decode(std::vector<int32_t>{5, 800}); }).find("outside the vocabulary"),
            std::string::npos);
}

}  // namespace
}  // namespace longnet::data
