#pragma once
// The tokenizer: SentencePiece models (BPE or unigram) trained and applied through SentencePiece's
// C++ API. Models trained here use the identity normalisation with whitespace kept and no space
// added in front, byte fallback and the special ids of special_ids.h, so decode(encode(text)) ==
// text for any valid UTF-8 text without the character U+2581 (SentencePiece's own whitespace
// marker), and, for BPE models, encode(a + b) == encode(a) + encode(b) when b starts with a space
// that follows a non-space. A model is identified by the SHA-256 of its file, which every token
// store records.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "data/corpus.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace longnet::data {

/// Settings of a model as stored in its file.
struct TokenizerSpec {
  std::string model_type;     // "unigram", "bpe", "word" or "char"
  std::string normalization;  // normaliser name ("identity" for models trained here)
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
};

/// A loaded SentencePiece model. Immutable; encode and decode may be called from many threads.
class Tokenizer {
 public:
  /// Loads a .model file; throws for a missing or invalid file, or for special ids other than
  /// those of special_ids.h.
  static Tokenizer load(const std::string& path);
  /// Loads from the bytes of a .model file; `name` appears in messages.
  static Tokenizer from_bytes(std::string bytes, std::string name);

  /// Token ids of `text` (no BOS or EOS added), as SentencePiece encodes the whole text. Long
  /// texts are encoded in pieces cut before a space when the model guarantees the same result.
  std::vector<int32_t> encode(std::string_view text) const;
  /// The text of `ids`; throws for an id outside the vocabulary.
  std::string decode(std::span<const int32_t> ids) const;
  /// The piece of one id.
  std::string piece(int32_t id) const;

  int32_t vocab_size() const;
  /// True when byte pieces cover any input (no unknown ids).
  bool byte_fallback() const;
  /// SHA-256 of the model file (64 hex digits).
  const std::string& hash() const { return hash_; }
  /// Where the model came from (path or name given to from_bytes).
  const std::string& name() const { return name_; }
  /// The model's bytes, as in its file.
  const std::string& bytes() const { return bytes_; }
  /// Model type and normalisation, read from the model.
  const TokenizerSpec& spec() const { return spec_; }

 private:
  Tokenizer() = default;

  std::shared_ptr<const sentencepiece::SentencePieceProcessor> sp_;
  std::string bytes_;
  std::string hash_;
  std::string name_;
  TokenizerSpec spec_;
  bool split_safe_ = false;  // long texts may be encoded piece by piece (see encode)
};

/// How to train a model.
struct TokenizerTrainOptions {
  int32_t vocab_size = 8000;
  std::string model_type = "bpe";     // "bpe" or "unigram"
  bool byte_fallback = true;          // byte pieces so that no input is unrepresentable
  uint32_t seed = 0;                  // SentencePiece's sampling and shuffling
  int threads = 0;                    // 0: all cores. Unigram results depend on it.
  double character_coverage = 0.9995; // rarer characters are left to byte fallback
  size_t max_piece_bytes = 4096;      // documents are cut at line ends into training pieces this long
  int64_t max_pieces = 0;             // sample this many pieces (0: all)
  bool verbose = false;               // SentencePiece's own log on stderr
};

/// What training read.
struct TokenizerTrainReport {
  CorpusStats corpus;
  int64_t pieces = 0;  // training pieces the documents were cut into
};

/// Trains a model on the corpus and returns the bytes of its .model file. Throws with a clear
/// message when the corpus cannot support the vocabulary size.
std::string train_tokenizer(CorpusReader& corpus, const TokenizerTrainOptions& options,
                            TokenizerTrainReport* report = nullptr);

/// Writes bytes to `path` through a temporary file in the same directory and a rename, so that
/// `path` is either absent, the old file, or complete.
void write_file_atomic(const std::string& path, std::string_view bytes);

/// A few lines describing a model: path, hash, type, vocabulary, special ids, normalisation.
std::string tokenizer_summary(const Tokenizer& tokenizer, int sample_pieces = 0);

}  // namespace longnet::data
