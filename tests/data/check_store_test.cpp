// tools/scripts/check_store.py against stores written here: it passes on a good store and fails
// on a changed source. Needs a Python with h5py and sentencepiece: LONGNET_PYTHON names it
// (default python3); without them the test is skipped with a message.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <sys/wait.h>

#include "data/prepare.h"
#include "tests/data/data_test_util.h"

namespace longnet::data {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

struct RunResult {
  int status;
  std::string output;
};

RunResult run(const std::string& command) {
  RunResult r{-1, ""};
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  while (size_t n = std::fread(buf.data(), 1, buf.size(), p)) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string python() {
  const char* env = std::getenv("LONGNET_PYTHON");
  return env && *env ? env : "python3";
}

std::string script() {
  return (fs::path(__FILE__).parent_path().parent_path().parent_path() / "tools/scripts/check_store.py").string();
}

TEST(CheckStoreScript, PassesOnAGoodStoreAndFailsOnAChangedSource) {
  if (run(python() + " -c 'import h5py, sentencepiece, numpy'").status != 0) {
    GTEST_SKIP() << python() << " lacks h5py/sentencepiece/numpy (set LONGNET_PYTHON to one that has them)";
  }
  TempDir dir;
  fs::create_directories(dir.path() / "src");
  for (const auto& e : fs::directory_iterator("/usr/share/common-licenses")) {
    if (e.is_regular_file()) fs::copy_file(e.path(), dir.path() / "src" / e.path().filename());
  }
  ASSERT_FALSE(fs::is_empty(dir.path() / "src"));
  PrepareOptions o;
  o.corpus.inputs = {dir.file("src")};
  o.tokenizer = dir.file("tok.model");
  write_file_atomic(o.tokenizer, testing::shared_tokenizer().bytes());
  o.output_dir = dir.file("out");
  o.val_fraction = 0.2;
  std::ostringstream log;
  prepare_store(o, log);
  for (const char* store : {"out/train.h5", "out/val.h5"}) {
    const RunResult ok = run(python() + " " + script() + " " + dir.file(store) + " " + o.tokenizer + " " + dir.file("src"));
    EXPECT_EQ(ok.status, 0) << ok.output;
    EXPECT_NE(ok.output.find("check_store: ok"), std::string::npos) << ok.output;
  }
  // Change one byte of every source document: no stored document matches any more.
  for (const auto& e : fs::directory_iterator(dir.path() / "src")) {
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('#');
  }
  const RunResult bad = run(python() + " " + script() + " " + dir.file("out/train.h5") + " " + o.tokenizer + " " + dir.file("src"));
  EXPECT_EQ(bad.status, 1) << bad.output;
  EXPECT_NE(bad.output.find("matches no source document"), std::string::npos) << bad.output;
}

}  // namespace
}  // namespace longnet::data
