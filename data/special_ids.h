#pragma once
// The special token ids every tokenizer of the project uses. They are fixed here, written into the
// SentencePiece model at training time, and checked when a model is loaded, so token stores,
// datasets and models agree on them without passing them around.
#include <cstdint>

namespace longnet::data {

/// Reserved ids at the bottom of every vocabulary.
struct SpecialIds {
  static constexpr int32_t pad = 0;  // padding (encoder-decoder batches); never a target
  static constexpr int32_t unk = 1;  // unknown piece (unused when byte fallback is on)
  static constexpr int32_t bos = 2;  // start of a decoder sequence
  static constexpr int32_t eos = 3;  // end of a document; joins documents in LM windows
};

}  // namespace longnet::data
