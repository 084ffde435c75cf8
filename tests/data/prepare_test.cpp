// longnet prepare as a library call: splits, order, thread independence, doc2text, and bad inputs
// that must leave no output behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "data/prepare.h"
#include "data/progress.h"
#include "data/rest_titles.h"
#include "data/token_store.h"
#include "framework/core/error.h"
#include "tests/data/data_test_util.h"
#include "tests/support/gradcheck.h"

namespace longnet::data {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Decoded documents of a store, EOS removed.
std::vector<std::string> decode_store(const std::string& path, const Tokenizer& tok) {
  auto store = TokenStore::open(path);
  std::vector<std::string> out;
  for (int64_t i = 0; i < store->num_documents(); ++i) {
    auto ids = store->document(i);
    EXPECT_EQ(ids.back(), SpecialIds::eos);
    ids.pop_back();
    out.push_back(tok.decode(ids));
  }
  return out;
}

struct Fixture {
  TempDir dir;
  std::string model;
  Fixture() {
    model = dir.file("tok.model");
    write_file_atomic(model, testing::shared_tokenizer().bytes());
  }
  PrepareOptions options(const std::vector<std::string>& inputs, const std::string& out) const {
    PrepareOptions o;
    o.corpus.inputs = inputs;
    o.tokenizer = model;
    o.output_dir = dir.file(out);
    o.threads = 2;
    return o;
  }
};

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  if (!fs::exists(dir)) return names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(Prepare, SplitsAndRoundTripsEveryDocument) {
  Fixture f;
  std::map<std::string, int> source;  // text -> position in corpus order
  for (int i = 0; i < 40; ++i) {
    const std::string text = "Document " + std::to_string(i) + ".\n" + testing::english_text(300 + 50 * i, i);
    f.dir.write("corpus/doc" + std::string(i < 10 ? "0" : "") + std::to_string(i) + ".txt", text);
    source[text] = i;
  }
  f.dir.write("corpus/empty.txt", "\n\n");
  PrepareOptions o = f.options({f.dir.file("corpus")}, "out");
  o.val_fraction = 0.1;
  std::ostringstream log;
  const PrepareReport r = prepare_store(o, log);
  EXPECT_EQ(r.corpus.documents, 40);
  EXPECT_EQ(r.corpus.empty_skipped, 1);
  EXPECT_EQ(r.validation.documents, 4);  // round(0.1 * 41 candidates)
  EXPECT_EQ(r.train.documents, 36);
  EXPECT_GT(r.mb_per_second(), 0);
  EXPECT_EQ(files_in(o.output_dir), (std::vector<std::string>{"train.h5", "val.h5"}));

  const Tokenizer& tok = testing::shared_tokenizer();
  std::set<std::string> seen;
  for (const std::string& path : {r.train.path, r.validation.path}) {
    int last = -1;
    for (const std::string& text : decode_store(path, tok)) {
      ASSERT_TRUE(source.count(text)) << "decoded text not in the corpus";
      EXPECT_GT(source[text], last) << "documents out of corpus order";
      last = source[text];
      seen.insert(text);
    }
    auto store = TokenStore::open(path);
    EXPECT_NO_THROW(store->require_tokenizer(tok));
    EXPECT_NO_THROW(store->verify());
  }
  EXPECT_EQ(seen.size(), 40u);
  EXPECT_EQ(TokenStore::open(r.validation.path)->info().header.split, "validation");
}

TEST(Prepare, ResultDoesNotDependOnThreadsButOnTheSeed) {
  Fixture f;
  for (int i = 0; i < 30; ++i) f.dir.write("c/" + std::to_string(100 + i) + ".txt", testing::english_text(2000, i));
  auto run = [&](int threads, uint64_t seed, const std::string& out) {
    PrepareOptions o = f.options({f.dir.file("c")}, out);
    o.threads = threads;
    o.seed = seed;
    o.val_fraction = 0.2;
    std::ostringstream log;
    prepare_store(o, log);
    auto train = TokenStore::open(f.dir.file(out + "/train.h5"));
    return std::make_pair(train->info().tokens_sha256, train->doc_offsets());
  };
  const auto one = run(1, 5, "a");
  EXPECT_EQ(run(2, 5, "b"), one);
  EXPECT_EQ(run(3, 5, "c3"), one);
  EXPECT_NE(run(2, 6, "d").first, one.first);  // another seed holds out other documents
}

TEST(Prepare, ReadsJsonlAndTheSystemLicenses) {
  Fixture f;
  const std::string jsonl = f.dir.write(
      "d.jsonl", "{\"text\": \"first document\\nwith two lines\"}\n{\"text\": \"second one\"}\n");
  PrepareOptions o = f.options({jsonl, "/usr/share/common-licenses"}, "out");
  o.val_fraction = 0;
  o.progress = true;
  std::ostringstream log;
  const PrepareReport r = prepare_store(o, log);
  EXPECT_TRUE(r.validation.path.empty());
  EXPECT_EQ(files_in(o.output_dir), (std::vector<std::string>{"train.h5"}));
  const auto docs = decode_store(r.train.path, testing::shared_tokenizer());
  ASSERT_GE(docs.size(), 10u);
  EXPECT_EQ(docs[0], "first document\nwith two lines");
  EXPECT_EQ(docs[1], "second one");
  // The licenses follow in sorted path order, byte for byte.
  CorpusReader licenses(testing::licenses_corpus());
  Document d;
  for (size_t i = 2; licenses.next(d); ++i) {
    ASSERT_LT(i, docs.size());
    EXPECT_EQ(docs[i], d.text) << d.origin;
  }
  EXPECT_NE(log.str().find("docs/s"), std::string::npos) << log.str();
  EXPECT_NE(log.str().find("MB/s"), std::string::npos) << log.str();
}

TEST(Prepare, BadInputsFailAndLeaveNoOutput) {
  Fixture f;
  f.dir.write("in/a.txt", "fine text");
  f.dir.write("in/b.txt", std::string("bad \xFE byte"));
  PrepareOptions o = f.options({f.dir.file("in")}, "out");
  std::ostringstream log;
  std::string msg = longnet::testing::error_message([&] { prepare_store(o, log); });
  EXPECT_NE(msg.find("invalid UTF-8 in " + f.dir.file("in/b.txt") + " at byte offset 4"), std::string::npos) << msg;
  EXPECT_TRUE(files_in(o.output_dir).empty());

  o.corpus.invalid_utf8 = InvalidUtf8::kSkip;
  o.val_fraction = 0;
  const PrepareReport r = prepare_store(o, log);
  EXPECT_EQ(r.corpus.invalid_skipped, 1);
  EXPECT_EQ(r.train.documents, 1);

  f.dir.write("empty/a.txt", " ");
  f.dir.write("empty/b.txt", "");
  o = f.options({f.dir.file("empty")}, "out2");
  msg = longnet::testing::error_message([&] { prepare_store(o, log); });
  EXPECT_NE(msg.find("no usable document"), std::string::npos) << msg;
  EXPECT_TRUE(files_in(o.output_dir).empty());

  o = f.options({f.dir.file("missing")}, "out3");
  msg = longnet::testing::error_message([&] { prepare_store(o, log); });
  EXPECT_NE(msg.find("cannot read " + f.dir.file("missing")), std::string::npos) << msg;

  o = f.options({f.dir.file("in")}, "out4");
  o.tokenizer = f.dir.file("nope.model");
  msg = longnet::testing::error_message([&] { prepare_store(o, log); });
  EXPECT_NE(msg.find("cannot read " + f.dir.file("nope.model")), std::string::npos) << msg;
}

TEST(Prepare, DocToTextPairsBodiesWithTitles) {
  Fixture f;
  f.dir.write("rst/a.rst.txt",
              "Getting started\n===============\n\nSome intro text.\n\nInstalling\n----------\n\nRun the installer.\n");
  f.dir.write("rst/b.rst.txt", "No titles here, only a paragraph.\n");
  f.dir.write("rst/c.rst.txt", "=====\nUsage\n=====\n\nCall it.\n");
  PrepareOptions o = f.options({f.dir.file("rst")}, "out");
  o.task = "doc2text";
  o.val_fraction = 0;
  std::ostringstream log;
  const PrepareReport r = prepare_store(o, log);
  EXPECT_EQ(r.untitled_skipped, 1);
  auto store = TokenStore::open(r.train.path);
  ASSERT_EQ(store->num_documents(), 2);
  const Tokenizer& tok = testing::shared_tokenizer();
  auto text_of = [&](std::vector<int32_t> ids) {
    ids.pop_back();  // EOS
    return tok.decode(ids);
  };
  EXPECT_EQ(text_of(store->target(0)), "Getting started\nInstalling");
  EXPECT_EQ(text_of(store->document(0)), "\nSome intro text.\n\n\nRun the installer.\n");
  EXPECT_EQ(text_of(store->target(1)), "Usage");
  EXPECT_EQ(text_of(store->document(1)), "\nCall it.\n");
}

TEST(RestTitles, FindsUnderlinedAndOverlinedTitlesOnly) {
  const std::string doc =
      ":mod:`json` --- JSON encoder\n"
      "============================\n"
      "\n"
      "Intro paragraph\n"
      "continues here.\n"
      "\n"
      "   Indented\n"
      "   --------\n"
      "\n"
      "Table:\n"
      "\n"
      "=====  =====\n"
      "a      b\n"
      "=====  =====\n"
      "\n"
      "-----\n"
      "\n"
      "Short\n"
      "--\n"
      "\n"
      "~~~~~~~~~~~~\n"
      "  Inset  \n"
      "~~~~~~~~~~~~\n"
      "text\n"
      "Not a title\n"
      "-----------\n";
  const TitledText t = split_rest_titles(doc);
  EXPECT_EQ(t.titles, (std::vector<std::string>{":mod:`json` --- JSON encoder", "Inset"}));
  EXPECT_NE(t.body.find("   Indented\n   --------\n"), std::string::npos);
  EXPECT_NE(t.body.find("=====  =====\na      b\n"), std::string::npos);
  EXPECT_NE(t.body.find("Short\n--\n"), std::string::npos);
  EXPECT_NE(t.body.find("text\nNot a title\n-----------\n"), std::string::npos);
  EXPECT_EQ(t.body.find("JSON encoder"), std::string::npos);
}

TEST(Progress, ShowsRatesAndEta) {
  std::ostringstream out;
  ProgressBar bar(out, "prepare", 10000000, 100, false);
  const std::string line = bar.render(40, 4000000, 2.0);
  EXPECT_NE(line.find("[prepare] [#########..............."), std::string::npos) << line;
  EXPECT_NE(line.find(" 40%"), std::string::npos) << line;
  EXPECT_NE(line.find("40/100 docs"), std::string::npos) << line;
  EXPECT_NE(line.find("4.0/10.0 MB"), std::string::npos) << line;
  EXPECT_NE(line.find("20 docs/s"), std::string::npos) << line;
  EXPECT_NE(line.find("2.0 MB/s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 3s"), std::string::npos) << line;
  bar.finish(100, 10000000);
  EXPECT_NE(out.str().find("100%"), std::string::npos);
}

}  // namespace
}  // namespace longnet::data
