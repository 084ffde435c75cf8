#pragma once
// The HDF5 token store: a tokenised corpus in one file.
//
//   /tokens       1-D uint16 (vocabulary <= 65536) or uint32: every document's tokens followed by
//                 EOS, documents back to back
//   /doc_offsets  1-D uint64, documents + 1 entries: document i is tokens[off[i], off[i+1])
//   doc2text stores add /target_tokens and /target_offsets in the same layout (document i's
//   target text, ending with EOS), aligned with the documents.
//   attributes    format_version, vocab_size, eos_id (and pad/unk/bos ids), tokenizer_sha256,
//                 task ("lm" or "doc2text"), split, source, num_documents, num_tokens,
//                 tokens_sha256 (SHA-256 of /tokens' little-endian bytes)
//
// Datasets are chunked (1 MiB chunks: no larger than HDF5's default chunk cache) and not
// compressed, so reading a window is a plain copy. A writer fills a temporary file next to the
// target and renames it into place when complete, so a store is never half-written.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/special_ids.h"

namespace longnet::data {

class Tokenizer;

/// The store layout version written by this program; readers reject newer ones.
inline constexpr int32_t kStoreFormatVersion = 1;

/// What a store says about itself (the attributes).
struct StoreHeader {
  int64_t vocab_size = 0;
  int32_t eos_id = SpecialIds::eos;
  std::string tokenizer_hash;  // SHA-256 of the tokenizer model file
  std::string task = "lm";     // "lm" or "doc2text"
  std::string split = "train";
  std::string source;          // the inputs it was made from
};

/// The header plus what was measured when the store was written.
struct StoreInfo {
  StoreHeader header;
  std::string path;
  int32_t format_version = 0;
  int token_bits = 0;  // 16 or 32
  int64_t num_documents = 0;
  int64_t num_tokens = 0;
  int64_t num_target_tokens = 0;  // doc2text only
  std::string tokens_sha256;
  uint64_t file_bytes = 0;
};

/// Writes a store. Tokens are checked against the vocabulary as they arrive.
class TokenStoreWriter {
 public:
  /// Starts `path`.tmp-<pid>; `path` itself appears only at commit().
  TokenStoreWriter(std::string path, StoreHeader header);
  /// Removes the temporary file unless commit() succeeded.
  ~TokenStoreWriter();
  TokenStoreWriter(const TokenStoreWriter&) = delete;
  TokenStoreWriter& operator=(const TokenStoreWriter&) = delete;

  /// Appends a document (its tokens; EOS is added). Language-model stores only.
  void add_document(std::span<const int32_t> tokens);
  /// Appends a document and its target text (EOS added to both). doc2text stores only.
  void add_pair(std::span<const int32_t> source, std::span<const int32_t> target);
  int64_t num_documents() const;
  int64_t num_tokens() const;
  /// Writes the remaining data and the attributes, syncs, and renames the file into place.
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Options for opening a store.
struct StoreOpenOptions {
  /// Token data up to this size is read into memory at open (fast windows, and a damaged file
  /// fails at once); larger stores are read from the file per window.
  uint64_t preload_max_bytes = uint64_t{2} << 30;
};

/// A store opened for reading; thread-safe.
class TokenStore {
 public:
  /// Opens and validates a store: HDF5 structure, datasets and their types, attributes, and
  /// offsets consistent with the token count. Throws a message naming the file and the problem
  /// for a missing, truncated, corrupt or foreign file.
  static std::shared_ptr<TokenStore> open(const std::string& path, StoreOpenOptions options = {});
  ~TokenStore();

  const StoreInfo& info() const { return info_; }
  int64_t num_documents() const { return info_.num_documents; }
  int64_t num_tokens() const { return info_.num_tokens; }
  /// (documents + 1) offsets into the tokens.
  const std::vector<uint64_t>& doc_offsets() const { return offsets_; }
  /// Tokens of document i, its EOS included.
  int64_t document_length(int64_t i) const;
  /// Copies tokens [start, start + count) into out.
  void read(int64_t start, int64_t count, int64_t* out) const;
  /// Document i's tokens (with its EOS).
  std::vector<int32_t> document(int64_t i) const;
  /// Document i's target tokens (with EOS); doc2text stores only.
  std::vector<int32_t> target(int64_t i) const;

  /// Throws unless the store was made with this tokenizer (hash and vocabulary size).
  void require_tokenizer(const Tokenizer& tokenizer) const;
  /// Reads every token: checks the checksum and that ids are below the vocabulary size. Throws on
  /// a mismatch; returns a one-line confirmation.
  std::string verify() const;
  /// A few lines describing the store (counts, document lengths, attributes).
  std::string summary() const;

 private:
  TokenStore() = default;
  void read_range(const std::string& dataset, int64_t start, int64_t count, int64_t* out) const;

  StoreInfo info_;
  std::vector<uint64_t> offsets_;
  std::vector<uint64_t> target_offsets_;
  std::vector<uint32_t> preloaded_;  // all tokens when small enough
  bool is_preloaded_ = false;
  struct Handles;
  std::unique_ptr<Handles> handles_;
};

/// True when `path` starts with the HDF5 signature.
bool is_hdf5_file(const std::string& path);

}  // namespace longnet::data
