#include "data/passkey.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "data/random.h"
#include "framework/core/error.h"

namespace longnet::data {
namespace {

// The pieces are encoded separately and joined; with models trained here that equals encoding the
// whole text.
constexpr const char* kIntro =
    "There is important information hidden inside a lot of irrelevant text. Find it and memorize "
    "it. I will quiz you about the important information there.\n\n";
constexpr const char* kQuestion = "\nWhat is the pass key? The pass key is";

std::string needle_text(const std::string& key) {
  return "\nThe pass key is " + key + ". Remember it. " + key + " is the pass key.\n";
}

// The answer follows "The pass key is" after a space.
std::string answer_text(const std::string& key) { return " " + key; }

// Which draw of an example's random stream.
enum Draw : uint64_t { kKey = 0, kFillerStart = 1, kDepth = 2 };

}  // namespace

PasskeyTask::PasskeyTask(std::shared_ptr<const TokenStore> filler, Tokenizer tokenizer, int digits)
    : store_(std::move(filler)), tokenizer_(std::move(tokenizer)), digits_(digits) {
  LN_CHECK(store_, "[passkey] no filler store");
  LN_CHECK(digits >= 1 && digits <= 18, "[passkey] digits must be in [1, 18], got ", digits);
  store_->require_tokenizer(tokenizer_);
  // Every document ends with EOS; anything beyond those is filler text.
  LN_CHECK(store_->num_tokens() > store_->num_documents(), "[passkey] ", store_->info().path,
           " has no text besides EOS tokens to use as filler");
  intro_ = tokenizer_.encode(kIntro);
  question_ = tokenizer_.encode(kQuestion);
  // Digits are single pieces, except that the first may merge with the word-start marker; the
  // longest encoding over the nine leading digits bounds every key of this length.
  for (char lead = '1'; lead <= '9'; ++lead) {
    const std::string key = lead + std::string(static_cast<size_t>(digits - 1), '0');
    needle_length_ = std::max<int64_t>(needle_length_, tokenizer_.encode(needle_text(key)).size());
    answer_length_ = std::max<int64_t>(answer_length_, tokenizer_.encode(answer_text(key)).size());
  }
}

int64_t PasskeyTask::min_length() const {
  return static_cast<int64_t>(intro_.size() + question_.size()) + needle_length_ + answer_length_;
}

std::vector<int32_t> PasskeyTask::filler(int64_t count, uint64_t start) const {
  const int64_t total = store_->num_tokens();
  const int32_t eos = store_->info().header.eos_id;
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(count));
  std::vector<int64_t> block;
  int64_t pos = static_cast<int64_t>(start % static_cast<uint64_t>(total));
  while (static_cast<int64_t>(out.size()) < count) {
    const int64_t n = std::min<int64_t>(total - pos, std::max<int64_t>(4096, count - out.size()));
    block.resize(static_cast<size_t>(n));
    store_->read(pos, n, block.data());
    for (int64_t t : block) {
      if (t != eos && static_cast<int64_t>(out.size()) < count) out.push_back(static_cast<int32_t>(t));
    }
    pos = (pos + n) % total;  // wrap around a store shorter than the filler
  }
  return out;
}

PasskeyExample PasskeyTask::make(int64_t length, double depth, uint64_t seed, uint64_t index) const {
  LN_CHECK(length >= min_length(), "[passkey] length ", length, " is shorter than the ",
           min_length(), " tokens of the prompt and answer without filler");
  LN_CHECK(depth >= 0 && depth <= 1, "[passkey] depth ", depth, " is outside [0, 1]");
  PasskeyExample ex;
  ex.length = length;
  ex.depth = depth;
  uint64_t low = 1;
  for (int i = 1; i < digits_; ++i) low *= 10;
  const uint64_t key = low + random_below(9 * low, seed, RandomStream::kPasskey, index, kKey);
  ex.passkey = std::to_string(key);
  const std::vector<int32_t> needle = tokenizer_.encode(needle_text(ex.passkey));
  ex.answer = tokenizer_.encode(answer_text(ex.passkey));
  const int64_t fill = length - static_cast<int64_t>(intro_.size() + needle.size() + question_.size() +
                                                     ex.answer.size());
  LN_CHECK(fill >= 0, "[passkey] the tokenizer encodes the key ", ex.passkey,
           " in more pieces than expected (a model trained without digit splitting?)");
  const int64_t before = std::llround(depth * static_cast<double>(fill));
  const std::vector<int32_t> text =
      filler(fill, random_bits(seed, RandomStream::kPasskey, index, kFillerStart));
  ex.prompt.reserve(static_cast<size_t>(length));
  ex.prompt.insert(ex.prompt.end(), intro_.begin(), intro_.end());
  ex.prompt.insert(ex.prompt.end(), text.begin(), text.begin() + before);
  ex.needle_position = static_cast<int64_t>(ex.prompt.size());
  ex.prompt.insert(ex.prompt.end(), needle.begin(), needle.end());
  ex.prompt.insert(ex.prompt.end(), text.begin() + before, text.end());
  ex.prompt.insert(ex.prompt.end(), question_.begin(), question_.end());
  return ex;
}

PasskeyDataset::PasskeyDataset(std::shared_ptr<const PasskeyTask> task, int64_t seq_len, int64_t size)
    : task_(std::move(task)), window_(seq_len + 1), size_(size) {
  LN_CHECK(task_, "[PasskeyDataset] no task");
  LN_CHECK(size >= 1, "[PasskeyDataset] size must be positive, got ", size);
  LN_CHECK(window_ >= task_->min_length(), "[PasskeyDataset] seq_len ", seq_len,
           " is too short for a passkey example (needs ", task_->min_length() - 1, ")");
}

std::vector<FieldSpec> PasskeyDataset::fields() const {
  return {{"tokens", window_}, {"answer_mask", window_}};
}

void PasskeyDataset::get(uint64_t seed, int64_t epoch, int64_t index, std::span<int64_t* const> out) const {
  LN_CHECK(index >= 0 && index < size_, "[PasskeyDataset] index ", index, " of ", size_);
  const uint64_t id = static_cast<uint64_t>(epoch) * static_cast<uint64_t>(size_) + static_cast<uint64_t>(index);
  const double depth = random_unit(seed, RandomStream::kPasskey, id, kDepth);
  const PasskeyExample ex = task_->make(window_, depth, seed, id);
  std::copy(ex.prompt.begin(), ex.prompt.end(), out[0]);
  std::copy(ex.answer.begin(), ex.answer.end(), out[0] + ex.prompt.size());
  std::fill_n(out[1], ex.prompt.size(), 0);
  std::fill_n(out[1] + ex.prompt.size(), ex.answer.size(), 1);
}

std::vector<PasskeyExample> passkey_grid(const PasskeyTask& task, const std::vector<int64_t>& lengths,
                                         const std::vector<double>& depths, int samples, uint64_t seed) {
  LN_CHECK(samples >= 1, "[passkey] samples per cell must be positive, got ", samples);
  std::vector<PasskeyExample> out;
  uint64_t index = 0;
  for (int64_t length : lengths) {
    for (double depth : depths) {
      for (int s = 0; s < samples; ++s) out.push_back(task.make(length, depth, seed, index++));
    }
  }
  return out;
}

bool passkey_correct(const Tokenizer& tokenizer, const PasskeyExample& example,
                     std::span<const int32_t> generated) {
  const std::string text = tokenizer.decode(generated);
  auto digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  const auto first = std::find_if(text.begin(), text.end(), digit);
  const auto last = std::find_if_not(first, text.end(), digit);
  return std::string(first, last) == example.passkey;
}

}  // namespace longnet::data
