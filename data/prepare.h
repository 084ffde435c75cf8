#pragma once
// Building token stores from a corpus (`longnet prepare`): documents are read in a fixed order,
// split into training and validation sets by a seeded draw, tokenised on several threads and
// appended in their original order, so the result does not depend on the thread count.
#include <cstdint>
#include <ostream>
#include <string>

#include "data/corpus.h"

namespace longnet::data {

/// What to build.
struct PrepareOptions {
  CorpusOptions corpus;
  std::string tokenizer;        // path of the SentencePiece model
  std::string output_dir;       // receives train.h5 and, when val_fraction > 0, val.h5
  std::string task = "lm";      // "lm": documents; "doc2text": reST body -> section titles
  double val_fraction = 0.01;   // share of documents held out (at least one when > 0)
  uint64_t seed = 0;            // chooses the validation documents
  int threads = 0;              // tokenising threads; 0: all cores
  bool progress = false;        // draw a progress bar on the log stream
  bool interactive = false;     // redraw the bar in place (a terminal)
};

/// One written store.
struct PreparedSplit {
  std::string path;  // empty when the split was not written
  int64_t documents = 0;
  int64_t tokens = 0;
};

/// What prepare read, skipped and wrote.
struct PrepareReport {
  CorpusStats corpus;
  PreparedSplit train, validation;
  int64_t untitled_skipped = 0;  // doc2text: documents without a section title
  double seconds = 0;
  /// Input megabytes (10^6 bytes) per second.
  double mb_per_second() const;
  double documents_per_second() const;
};

/// Builds the stores. Throws, leaving no output file, on any error; progress goes to `log`.
PrepareReport prepare_store(const PrepareOptions& options, std::ostream& log);

/// The output file names inside the output directory.
inline constexpr const char* kTrainStoreName = "train.h5";
inline constexpr const char* kValidationStoreName = "val.h5";

}  // namespace longnet::data
