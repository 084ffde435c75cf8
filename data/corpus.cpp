#include "data/corpus.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/utf8.h"
#include "framework/core/error.h"

namespace longnet::data {
namespace fs = std::filesystem;
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

InputFormat resolve_format(InputFormat requested, const std::string& path) {
  if (requested != InputFormat::kAuto) return requested;
  return ends_with(path, ".jsonl") ? InputFormat::kJsonl : InputFormat::kText;
}

// Throws unless the file can be opened for reading (permissions, dangling links).
void check_readable(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LN_CHECK(f.good(), "[corpus] cannot read ", path, ": ", std::strerror(errno));
}

}  // namespace

InputFormat input_format_from_string(const std::string& name) {
  if (name == "auto") return InputFormat::kAuto;
  if (name == "text") return InputFormat::kText;
  if (name == "jsonl") return InputFormat::kJsonl;
  LN_FAIL("[corpus] unknown input format '", name, "' (expected auto, text or jsonl)");
}

CorpusOptions default_corpus_options() {
  LN_CHECK(fs::is_directory(kDefaultCorpusDir), "[corpus] the default corpus ", kDefaultCorpusDir,
           " is not installed: run tools/scripts/setup.sh (package python3.11-doc) or pass --input");
  CorpusOptions options;
  options.inputs = {kDefaultCorpusDir};
  options.suffixes = {kDefaultCorpusSuffix};
  return options;
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  LN_CHECK(f.good(), "[", what, "] cannot read ", path, ": ", std::strerror(errno));
  std::ostringstream s;
  s << f.rdbuf();
  LN_CHECK(!f.bad(), "[", what, "] error reading ", path, ": ", std::strerror(errno));
  return s.str();
}

CorpusReader::CorpusReader(CorpusOptions options) : options_(std::move(options)) {
  LN_CHECK(!options_.inputs.empty(), "[corpus] no input files or directories given");
  for (const std::string& input : options_.inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(input, ec);
    LN_CHECK(!ec && fs::exists(st), "[corpus] cannot read ", input, ": no such file or directory");
    if (fs::is_directory(st)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(input, fs::directory_options::follow_directory_symlink, ec);
           !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (!it->is_regular_file()) continue;
        const std::string path = it->path().string();
        const bool wanted = options_.suffixes.empty() ||
                            std::any_of(options_.suffixes.begin(), options_.suffixes.end(),
                                        [&](const std::string& s) { return ends_with(path, s); });
        if (wanted) found.push_back(path);
      }
      LN_CHECK(!ec, "[corpus] cannot list ", input, ": ", ec.message());
      std::sort(found.begin(), found.end());
      for (const std::string& path : found) {
        check_readable(path);
        files_.push_back({path, resolve_format(options_.format, path), fs::file_size(path)});
      }
    } else {
      check_readable(input);
      files_.push_back({input, resolve_format(options_.format, input), fs::file_size(input)});
    }
  }
  std::string wanted;
  for (const std::string& s : options_.suffixes) wanted += (wanted.empty() ? "" : ", ") + s;
  LN_CHECK(!files_.empty(), "[corpus] no files found under the inputs",
           wanted.empty() ? "" : " with suffix " + wanted);
}

CorpusReader::~CorpusReader() = default;

uint64_t CorpusReader::total_bytes() const {
  uint64_t total = 0;
  for (const CorpusFile& f : files_) total += f.bytes;
  return total;
}

int64_t CorpusReader::count_candidates() const {
  int64_t n = 0;
  for (const CorpusFile& f : files_) {
    if (f.format == InputFormat::kText) {
      ++n;
      continue;
    }
    std::ifstream in(f.path, std::ios::binary);
    LN_CHECK(in.good(), "[corpus] cannot read ", f.path, ": ", std::strerror(errno));
    std::string line;
    while (std::getline(in, line)) ++n;
  }
  return n;
}

bool CorpusReader::accept(const std::string& text, const std::string& where, uint64_t file_offset) {
  const size_t bad = first_invalid_utf8(text);
  if (bad != kValidUtf8) {
    LN_CHECK(options_.invalid_utf8 == InvalidUtf8::kSkip, "[corpus] invalid UTF-8 in ", where,
             " at byte offset ", file_offset + bad,
             " (skip such documents with --skip-invalid-utf8)");
    ++stats_.invalid_skipped;
    return false;
  }
  if (is_blank(text)) {
    ++stats_.empty_skipped;
    return false;
  }
  return true;
}

bool CorpusReader::next(Document& doc) {
  while (true) {
    if (jsonl_) {
      if (next_from_jsonl(doc)) return true;
      continue;
    }
    if (file_index_ >= files_.size()) return false;
    const CorpusFile& file = files_[file_index_++];
    if (file.format == InputFormat::kJsonl) {
      jsonl_ = std::make_unique<std::ifstream>(file.path, std::ios::binary);
      LN_CHECK(jsonl_->good(), "[corpus] cannot read ", file.path, ": ", std::strerror(errno));
      jsonl_line_ = 0;
      jsonl_offset_ = 0;
      continue;
    }
    std::string text = read_file(file.path, "corpus");
    stats_.bytes_read += text.size();
    const int64_t ordinal = ordinal_++;
    if (!accept(text, file.path, 0)) continue;
    doc.text = std::move(text);
    doc.origin = file.path;
    doc.ordinal = ordinal;
    ++stats_.documents;
    stats_.document_bytes += doc.text.size();
    return true;
  }
}

bool CorpusReader::next_from_jsonl(Document& doc) {
  const std::string& path = files_[file_index_ - 1].path;
  std::string line;
  while (std::getline(*jsonl_, line)) {
    const uint64_t line_offset = jsonl_offset_;
    jsonl_offset_ += line.size() + 1;
    stats_.bytes_read += line.size() + 1;
    ++jsonl_line_;
    const int64_t ordinal = ordinal_++;
    const std::string where = path + ":" + std::to_string(jsonl_line_);
    if (is_blank(line)) {
      ++stats_.empty_skipped;
      continue;
    }
    // The raw line is checked first so that the offset points into the file.
    if (!accept(line, where, line_offset)) continue;
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      LN_FAIL("[corpus] ", where, ": not a JSON object (", e.what(), ")");
    }
    const auto field = record.is_object() ? record.find(options_.text_field) : record.end();
    LN_CHECK(record.is_object() && field != record.end() && field->is_string(), "[corpus] ", where,
             ": no string field \"", options_.text_field, "\" (choose it with --text-field)");
    std::string text = field->get<std::string>();
    if (!accept(text, where + " (field \"" + options_.text_field + "\")", line_offset)) continue;
    doc.text = std::move(text);
    doc.origin = where;
    doc.ordinal = ordinal;
    ++stats_.documents;
    stats_.document_bytes += doc.text.size();
    return true;
  }
  LN_CHECK(!jsonl_->bad(), "[corpus] error reading ", path, ": ", std::strerror(errno));
  jsonl_.reset();
  return false;
}

void CorpusReader::require_documents() const {
  if (stats_.documents > 0) return;
  const int64_t total = stats_.empty_skipped + stats_.invalid_skipped;
  LN_FAIL("[corpus] no usable document in ", files_.size(), " file(s): ", total,
          " candidate(s), ", stats_.empty_skipped, " empty, ", stats_.invalid_skipped,
          " invalid UTF-8");
}

std::vector<std::string> split_for_training(const std::string& text, size_t max_bytes) {
  LN_CHECK(max_bytes >= 4, "[corpus] training piece limit ", max_bytes, " is below one character");
  std::vector<std::string> pieces;
  std::string current;
  auto flush = [&] {
    if (!current.empty()) pieces.push_back(std::move(current));
    current.clear();
  };
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string::npos ? text.size() : nl + 1;
    std::string_view line(text.data() + pos, end - pos);
    pos = end;
    if (current.size() + line.size() <= max_bytes) {
      current.append(line);
      continue;
    }
    flush();
    while (line.size() > max_bytes) {
      size_t cut = utf8_prefix_length(line, max_bytes);
      const size_t space = line.rfind(' ', cut - 1);
      if (space != std::string_view::npos && space > 0) cut = space;
      pieces.emplace_back(line.substr(0, cut));
      line.remove_prefix(cut);
    }
    current.assign(line);
  }
  flush();
  return pieces;
}

}  // namespace longnet::data
