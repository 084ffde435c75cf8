#include "tests/data/data_test_util.h"

#include <cctype>
#include <fstream>

#include <unistd.h>

#include "data/random.h"

namespace longnet::data::testing {
namespace fs = std::filesystem;

TempDir::TempDir() {
  static int counter = 0;
  path_ = fs::temp_directory_path() /
          ("longnet-data-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(path_);
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  const fs::path p = path_ / name;
  fs::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << content;
  return p.string();
}

std::string english_text(size_t bytes, uint64_t seed) {
  static const char* kWords[] = {
      "the", "model", "reads", "long", "documents", "and", "attention", "grows", "linearly",
      "with", "sequence", "length", "a", "token", "store", "holds", "every", "window", "of",
      "text", "data", "is", "split", "into", "training", "validation", "sets", "we", "measure",
      "throughput", "in", "tokens", "per", "second", "dilated", "segments", "heads", "merge",
      "by", "their", "softmax", "denominators", "GPU", "memory", "stays", "small"};
  constexpr uint64_t kCount = sizeof(kWords) / sizeof(kWords[0]);
  std::string out;
  uint64_t i = 0;
  while (out.size() < bytes) {
    const uint64_t words = 4 + random_below(10, seed, RandomStream::kWindow, i++);
    std::string sentence;
    for (uint64_t w = 0; w < words; ++w) {
      if (w) sentence += ' ';
      sentence += kWords[random_below(kCount, seed, RandomStream::kWindow, i++)];
    }
    sentence[0] = static_cast<char>(std::toupper(sentence[0]));
    out += sentence + (random_below(4, seed, RandomStream::kWindow, i++) == 0 ? ".\n" : ". ");
  }
  return out;
}

const Tokenizer& shared_tokenizer() {
  static const Tokenizer tokenizer = [] {
    CorpusOptions options;
    options.inputs = {"/usr/share/common-licenses/GPL-3"};
    CorpusReader corpus(options);
    TokenizerTrainOptions train;
    train.vocab_size = 800;
    train.threads = 1;
    return Tokenizer::from_bytes(train_tokenizer(corpus, train), "shared-test-tokenizer");
  }();
  return tokenizer;
}

CorpusOptions licenses_corpus() {
  CorpusOptions options;
  options.inputs = {"/usr/share/common-licenses"};
  return options;
}

}  // namespace longnet::data::testing
