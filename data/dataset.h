#pragma once
// Datasets over token stores. A dataset is a pure function from (seed, epoch, index) to one
// example, so a loader can be positioned anywhere and reproduce exactly what it would have read.
//
// Language-model windows hold seq_len + 1 tokens (inputs are the first seq_len, targets the last
// seq_len). Documents in a store are joined by EOS, so a window that crosses a document boundary
// sees the EOS between them.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "data/token_store.h"

namespace longnet::data {

/// One named field of every example: `length` int64 values.
struct FieldSpec {
  std::string name;
  int64_t length;
};

/// A source of examples with fixed-length fields.
class Dataset {
 public:
  virtual ~Dataset() = default;
  /// Examples per epoch.
  virtual int64_t size() const = 0;
  /// The fields of each example, in the order get() fills them.
  virtual std::vector<FieldSpec> fields() const = 0;
  /// Writes example `index` (< size()) of `epoch` under `seed`: out[f] receives
  /// fields()[f].length values. Must be safe to call from several threads.
  virtual void get(uint64_t seed, int64_t epoch, int64_t index, std::span<int64_t* const> out) const = 0;
};

/// Where language-model windows may start.
enum class WindowMode {
  kRandom,          // anywhere in the joined token stream (uniform, redrawn every epoch)
  kDocumentStart,   // at a document start; a document longer than a window also at multiples
                    // of the window inside it, the last aligned to its end; short documents
                    // run on into the next
  kWithinDocument,  // like kDocumentStart but only windows that lie inside one document:
                    // long-document training; shorter documents are left out
};
/// Parses "random", "document" or "within_document".
WindowMode window_mode_from_string(const std::string& name);
/// The name window_mode_from_string accepts.
const char* window_mode_name(WindowMode mode);

/// Windows of seq_len + 1 tokens from a language-model store: one field "tokens" (N + 1).
class WindowDataset final : public Dataset {
 public:
  /// Throws when the store holds fewer than seq_len + 1 tokens, or (kWithinDocument) when no
  /// document is that long.
  WindowDataset(std::shared_ptr<const TokenStore> store, int64_t seq_len, WindowMode mode);

  int64_t size() const override;
  std::vector<FieldSpec> fields() const override;
  void get(uint64_t seed, int64_t epoch, int64_t index, std::span<int64_t* const> out) const override;
  /// First token of window `index` of `epoch` (the window is tokens [start, start + seq_len + 1)).
  int64_t window_start(uint64_t seed, int64_t epoch, int64_t index) const;

 private:
  std::shared_ptr<const TokenStore> store_;
  int64_t window_;  // seq_len + 1
  WindowMode mode_;
  std::vector<int64_t> starts_;  // fixed starts of the document modes
};

/// Document -> section titles pairs from a doc2text store. Fields "source" (source_len: the
/// document's tokens with EOS, cut or padded) and "target" (target_len + 1: BOS, the title
/// tokens with EOS, cut or padded). Padding is SpecialIds::pad.
class DocToTextDataset final : public Dataset {
 public:
  DocToTextDataset(std::shared_ptr<const TokenStore> store, int64_t source_len, int64_t target_len);

  int64_t size() const override;
  std::vector<FieldSpec> fields() const override;
  void get(uint64_t seed, int64_t epoch, int64_t index, std::span<int64_t* const> out) const override;

 private:
  std::shared_ptr<const TokenStore> store_;
  int64_t source_len_, target_len_;
};

}  // namespace longnet::data
