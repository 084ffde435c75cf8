#pragma once
// Command-line options shared by the commands that read a corpus (tokenizer train, prepare).
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "data/corpus.h"

namespace longnet::tools {

/// Corpus options as parsed, before they become a CorpusOptions.
struct CorpusCli {
  std::vector<std::string> inputs;
  std::vector<std::string> suffixes;
  std::string format = "auto";
  std::string text_field = "text";
  bool skip_invalid_utf8 = false;

  /// The corpus to read: the inputs given, or the default corpus (Python docs) when none.
  data::CorpusOptions options() const {
    data::CorpusOptions o;
    if (inputs.empty()) {
      o = data::default_corpus_options();
    } else {
      o.inputs = inputs;
    }
    if (!inputs.empty() || !suffixes.empty()) o.suffixes = suffixes;  // given ones replace the default's
    o.format = data::input_format_from_string(format);
    o.text_field = text_field;
    o.invalid_utf8 = skip_invalid_utf8 ? data::InvalidUtf8::kSkip : data::InvalidUtf8::kError;
    return o;
  }
};

/// Adds --input, --suffix, --format, --text-field and --skip-invalid-utf8 to a subcommand.
inline void add_corpus_options(CLI::App* app, CorpusCli& c) {
  app->add_option("--input,-i", c.inputs,
                  std::string("Text files, folders (read recursively) or JSONL files; default: the Python "
                              "documentation sources in ") + data::kDefaultCorpusDir);
  app->add_option("--suffix", c.suffixes, "Only files in folders whose names end with one of these (e.g. .txt)");
  app->add_option("--format", c.format, "auto (JSONL for *.jsonl), text (one document per file) or jsonl (one per line)")
      ->check(CLI::IsMember({"auto", "text", "jsonl"}));
  app->add_option("--text-field", c.text_field, "JSONL field holding the document text");
  app->add_flag("--skip-invalid-utf8", c.skip_invalid_utf8,
                "Skip documents that are not valid UTF-8 (counted) instead of stopping with an error");
}

}  // namespace longnet::tools
