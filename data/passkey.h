#pragma once
// Passkey retrieval (Mohtashami & Jaggi, 2023): a random number is hidden at a chosen depth of a
// long filler text drawn from the corpus, and asked for at the end. Used to train and to measure
// how far a model's attention reaches: an evaluation grid over length x depth.
//
// An example of length L is, in tokens:
//   intro | filler (depth share) | needle "The pass key is K. Remember it. K is the pass key." |
//   filler (the rest) | "What is the pass key? The pass key is" | answer " K"
// The filler is a run of corpus tokens (EOS removed) from a random position of a token store.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/token_store.h"
#include "data/tokenizer.h"

namespace longnet::data {

/// One passkey example.
struct PasskeyExample {
  int64_t length = 0;            // prompt + answer tokens
  double depth = 0;              // where the needle sits in the filler, 0 (start) to 1 (end)
  std::string passkey;           // the digits
  std::vector<int32_t> prompt;   // everything before the answer
  std::vector<int32_t> answer;   // the tokens of " " + passkey
  int64_t needle_position = 0;   // first token of the needle sentence in the prompt
};

/// Builds passkey examples from a filler store and the tokenizer that made it.
class PasskeyTask {
 public:
  /// Throws if the store was not made with `tokenizer` or holds no filler tokens.
  PasskeyTask(std::shared_ptr<const TokenStore> filler, Tokenizer tokenizer, int digits = 5);

  /// An example of exactly `length` tokens with the needle at `depth`; the passkey and the
  /// filler position are drawn from (seed, index). Throws when `length` < min_length().
  PasskeyExample make(int64_t length, double depth, uint64_t seed, uint64_t index) const;
  /// The shortest length any key fits in (no filler for the longest-encoding keys).
  int64_t min_length() const;
  const Tokenizer& tokenizer() const { return tokenizer_; }

 private:
  std::vector<int32_t> filler(int64_t count, uint64_t start) const;

  std::shared_ptr<const TokenStore> store_;
  Tokenizer tokenizer_;
  int digits_;
  std::vector<int32_t> intro_, question_;
  int64_t needle_length_ = 0;  // the longest needle and answer over keys of `digits` digits
  int64_t answer_length_ = 0;
};

/// Training examples: fields "tokens" (N + 1: prompt + answer) and "answer_mask" (N + 1: 1 where
/// the token is part of the answer, else 0), depth uniform in [0, 1], `size` examples per epoch.
class PasskeyDataset final : public Dataset {
 public:
  PasskeyDataset(std::shared_ptr<const PasskeyTask> task, int64_t seq_len, int64_t size);

  int64_t size() const override { return size_; }
  std::vector<FieldSpec> fields() const override;
  void get(uint64_t seed, int64_t epoch, int64_t index, std::span<int64_t* const> out) const override;

 private:
  std::shared_ptr<const PasskeyTask> task_;
  int64_t window_;  // seq_len + 1
  int64_t size_;
};

/// The evaluation grid: `samples` examples for each (length, depth), lengths outermost.
std::vector<PasskeyExample> passkey_grid(const PasskeyTask& task, const std::vector<int64_t>& lengths,
                                         const std::vector<double>& depths, int samples, uint64_t seed);

/// True when the first number in the decoded `generated` tokens is the passkey.
bool passkey_correct(const Tokenizer& tokenizer, const PasskeyExample& example,
                     std::span<const int32_t> generated);

}  // namespace longnet::data
