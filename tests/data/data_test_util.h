#pragma once
// Helpers shared by the data tests: a temporary directory removed at the end of a test, small
// text corpora written into it, and a tokenizer trained once per test binary.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace longnet::data::testing {

/// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  /// path() / name as a string.
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  /// Writes `content` to path() / name (creating parent folders) and returns the full path.
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::filesystem::path path_;
};

/// English text of about `bytes` bytes, made of sentences from a fixed word list chosen by
/// `seed`, with line breaks; different seeds give different documents.
std::string english_text(size_t bytes, uint64_t seed);

/// A tokenizer (BPE, 800 pieces, byte fallback) trained once on the GPL-3 text from
/// /usr/share/common-licenses and reused by every test in the binary.
const Tokenizer& shared_tokenizer();

/// Every file under /usr/share/common-licenses (the tests' real-text corpus).
CorpusOptions licenses_corpus();

}  // namespace longnet::data::testing
