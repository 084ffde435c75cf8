#include "data/dataset.h"

#include <algorithm>

#include "data/random.h"
#include "framework/core/error.h"

namespace longnet::data {

WindowMode window_mode_from_string(const std::string& name) {
  if (name == "random") return WindowMode::kRandom;
  if (name == "document") return WindowMode::kDocumentStart;
  if (name == "within_document") return WindowMode::kWithinDocument;
  LN_FAIL("[WindowDataset] unknown window mode '", name, "' (expected random, document or within_document)");
}

const char* window_mode_name(WindowMode mode) {
  switch (mode) {
    case WindowMode::kRandom: return "random";
    case WindowMode::kDocumentStart: return "document";
    case WindowMode::kWithinDocument: return "within_document";
  }
  return "?";
}

WindowDataset::WindowDataset(std::shared_ptr<const TokenStore> store, int64_t seq_len, WindowMode mode)
    : store_(std::move(store)), window_(seq_len + 1), mode_(mode) {
  LN_CHECK(store_, "[WindowDataset] no store");
  const std::string& path = store_->info().path;
  LN_CHECK(store_->info().header.task == "lm", "[WindowDataset] ", path, " is a ",
           store_->info().header.task, " store, not a language-model store");
  LN_CHECK(seq_len >= 1, "[WindowDataset] seq_len must be positive, got ", seq_len);
  const int64_t total = store_->num_tokens();
  LN_CHECK(total >= window_, "[WindowDataset] ", path, " holds ", total,
           " tokens, fewer than one window of seq_len + 1 = ", window_);
  if (mode_ == WindowMode::kRandom) return;
  int64_t longest = 0;
  for (int64_t d = 0; d < store_->num_documents(); ++d) {
    const int64_t begin = static_cast<int64_t>(store_->doc_offsets()[d]);
    const int64_t length = store_->document_length(d);
    longest = std::max(longest, length);
    if (length < window_) {
      // Too short for a window of its own: starts here and runs on, pulled back at the end.
      if (mode_ == WindowMode::kDocumentStart) starts_.push_back(std::min(begin, total - window_));
      continue;
    }
    for (int64_t k = 0; k + window_ <= length; k += window_) starts_.push_back(begin + k);
    if (length % window_ != 0) starts_.push_back(begin + length - window_);  // the tail
  }
  LN_CHECK(!starts_.empty(), "[WindowDataset] seq_len ", seq_len, " (windows of ", window_,
           " tokens) is longer than every document of ", path, " (longest: ", longest,
           " tokens with its EOS): lower seq_len, or use window mode 'document' or 'random'");
}

int64_t WindowDataset::size() const {
  if (mode_ == WindowMode::kRandom) return store_->num_tokens() / window_;
  return static_cast<int64_t>(starts_.size());
}

std::vector<FieldSpec> WindowDataset::fields() const { return {{"tokens", window_}}; }

int64_t WindowDataset::window_start(uint64_t seed, int64_t epoch, int64_t index) const {
  LN_CHECK(index >= 0 && index < size(), "[WindowDataset] index ", index, " of ", size());
  if (mode_ != WindowMode::kRandom) return starts_[static_cast<size_t>(index)];
  const uint64_t positions = static_cast<uint64_t>(store_->num_tokens() - window_ + 1);
  return static_cast<int64_t>(random_below(positions, seed, RandomStream::kWindow,
                                           static_cast<uint64_t>(epoch), static_cast<uint64_t>(index)));
}

void WindowDataset::get(uint64_t seed, int64_t epoch, int64_t index, std::span<int64_t* const> out) const {
  store_->read(window_start(seed, epoch, index), window_, out[0]);
}

DocToTextDataset::DocToTextDataset(std::shared_ptr<const TokenStore> store, int64_t source_len,
                                   int64_t target_len)
    : store_(std::move(store)), source_len_(source_len), target_len_(target_len) {
  LN_CHECK(store_ && store_->info().header.task == "doc2text", "[DocToTextDataset] ",
           store_ ? store_->info().path : "(null)", " is not a doc2text store (make one with "
           "`longnet prepare --task doc2text`)");
  LN_CHECK(source_len >= 1 && target_len >= 1, "[DocToTextDataset] lengths must be positive, got ",
           source_len, " and ", target_len);
  LN_CHECK(store_->num_documents() > 0, "[DocToTextDataset] ", store_->info().path, " has no documents");
}

int64_t DocToTextDataset::size() const { return store_->num_documents(); }

std::vector<FieldSpec> DocToTextDataset::fields() const {
  return {{"source", source_len_}, {"target", target_len_ + 1}};
}

void DocToTextDataset::get(uint64_t, int64_t, int64_t index, std::span<int64_t* const> out) const {
  LN_CHECK(index >= 0 && index < size(), "[DocToTextDataset] index ", index, " of ", size());
  const std::vector<int32_t> source = store_->document(index);
  const std::vector<int32_t> target = store_->target(index);
  std::fill_n(out[0], source_len_, SpecialIds::pad);
  std::copy_n(source.begin(), std::min<int64_t>(source_len_, source.size()), out[0]);
  std::fill_n(out[1], target_len_ + 1, SpecialIds::pad);
  out[1][0] = SpecialIds::bos;
  std::copy_n(target.begin(), std::min<int64_t>(target_len_, target.size()), out[1] + 1);
}

}  // namespace longnet::data
