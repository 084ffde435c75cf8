#pragma once
// Reading text corpora: files, directories (recursive, sorted) and JSONL, one document per file or
// per line, with UTF-8 validation and a count of what was skipped. The default corpus is the
// Python documentation sources installed by tools/scripts/setup.sh.
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace longnet::data {

/// Where the default corpus lives: the reST sources of the Python 3.11 documentation
/// (Debian package python3.11-doc, about 500 documents, 12 MB).
inline constexpr const char* kDefaultCorpusDir = "/usr/share/doc/python3.11/html/_sources";
/// The file suffix of its documents.
inline constexpr const char* kDefaultCorpusSuffix = ".rst.txt";

/// How a file holds documents.
enum class InputFormat {
  kAuto,   // JSONL for files ending in .jsonl, else text
  kText,   // the whole file is one document
  kJsonl,  // one JSON object per line; the document is one string field
};
/// Parses "auto", "text" or "jsonl".
InputFormat input_format_from_string(const std::string& name);

/// What to do with a document that is not valid UTF-8.
enum class InvalidUtf8 { kError, kSkip };

/// What to read and how.
struct CorpusOptions {
  std::vector<std::string> inputs;       // files or directories
  InputFormat format = InputFormat::kAuto;
  std::string text_field = "text";       // JSONL field holding the document
  std::vector<std::string> suffixes;     // files found in directories must end with one (empty: all)
  InvalidUtf8 invalid_utf8 = InvalidUtf8::kError;
};

/// The default corpus (kDefaultCorpusDir, *.rst.txt); throws with a hint if it is not installed.
CorpusOptions default_corpus_options();

/// One file to read and its format.
struct CorpusFile {
  std::string path;
  InputFormat format;  // kText or kJsonl
  uint64_t bytes;
};

/// One document.
struct Document {
  std::string text;
  std::string origin;    // "path" or "path:line"
  int64_t ordinal = -1;  // position among all candidate documents (files and JSONL lines)
};

/// What a pass over the corpus read and skipped.
struct CorpusStats {
  int64_t documents = 0;        // returned by next()
  int64_t empty_skipped = 0;    // empty or whitespace-only
  int64_t invalid_skipped = 0;  // invalid UTF-8 under InvalidUtf8::kSkip
  uint64_t bytes_read = 0;      // of the files, including skipped documents
  uint64_t document_bytes = 0;  // of the returned documents
};

/// Reads the documents of a corpus in a fixed order: inputs in the order given, directory
/// contents sorted by path, JSONL lines in file order.
class CorpusReader {
 public:
  /// Lists the files; throws if an input is missing or unreadable or if nothing matches.
  explicit CorpusReader(CorpusOptions options);
  ~CorpusReader();

  const std::vector<CorpusFile>& files() const { return files_; }
  /// Total size of the files in bytes.
  uint64_t total_bytes() const;
  /// Number of candidate documents: one per text file plus one per JSONL line (reads the JSONL
  /// files once to count lines).
  int64_t count_candidates() const;
  /// The next non-empty, valid document; false after the last. Throws on invalid UTF-8 (with the
  /// file and byte offset) unless skipping, on malformed JSONL, and on unreadable files.
  bool next(Document& doc);
  /// Throws when the pass is over and every document was empty or skipped.
  void require_documents() const;
  const CorpusStats& stats() const { return stats_; }

 private:
  bool next_from_jsonl(Document& doc);
  /// Applies the empty/invalid rules; true when the document should be returned.
  bool accept(const std::string& text, const std::string& where, uint64_t file_offset);

  CorpusOptions options_;
  std::vector<CorpusFile> files_;
  size_t file_index_ = 0;
  std::unique_ptr<std::ifstream> jsonl_;  // open JSONL file, if any
  int64_t jsonl_line_ = 0;
  uint64_t jsonl_offset_ = 0;
  int64_t ordinal_ = 0;
  CorpusStats stats_;
};

/// Reads a whole file; throws "[what] cannot read PATH: reason".
std::string read_file(const std::string& path, const char* what);

/// Splits a document into pieces of at most max_bytes at line ends (each piece keeps its '\n'),
/// cutting over-long lines at the last space before the limit or else at a character boundary.
/// Concatenating the pieces gives the document back.
std::vector<std::string> split_for_training(const std::string& text, size_t max_bytes);

}  // namespace longnet::data
