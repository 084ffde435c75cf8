#pragma once
// Generation with a KV cache: prefill and incremental decoding of the LongNet decoder (LM, or the
// decoder of the encoder-decoder with cross-attention keys and values computed once), and the
// generation loop (stop tokens, a token budget, sampling, streaming).
//
// Decoding reproduces the forward pass: the logits of a row decoded against the cache equal the
// logits the model's forward (in eval mode) gives at that position, for every attention core
// (see layers/attention/decode.h; the adaptive core and the random block pattern route as the
// forward over the cache's max_length positions).
//
// Prompts of different lengths share positions: all sequences start at position 0 (no padding,
// so each sequence sees exactly what it would see alone, which dilated and block patterns need:
// they depend on absolute positions). The common prefix is prefilled in chunks; from there every
// step feeds each sequence its next prompt token or, once its prompt is consumed, its last
// generated token. A finished sequence keeps being fed (its outputs are ignored) until all are done.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "layers/attention/decode.h"
#include "layers/multihead_attention.h"
#include "models/encoder_decoder.h"
#include "models/longnet_lm.h"
#include "models/sampling.h"

namespace longnet {

/// The decoding state of a decoder stack: a self-attention KV cache per layer and, with
/// cross-attention, the encoder output's keys and values per layer (computed once).
struct DecoderCache {
  std::vector<KvCache> self;
  std::vector<KeyValue> cross;
  /// (B, M) bool, true at padded encoder positions; or undefined.
  Tensor memory_padding_mask;

  /// Positions decoded so far.
  int64_t length() const { return self.empty() ? 0 : self.front().length(); }
  /// Bytes held by the self-attention caches and cross-attention keys and values.
  int64_t bytes() const;
};

/// A cache for `decoder` (a decoder-only LM's) holding up to max_length positions.
DecoderCache make_decoder_cache(const LongNetDecoder& decoder, int64_t max_length);
/// A cache for the decoder of an encoder-decoder: cross-attention keys and values of `encoded`.
DecoderCache make_decoder_cache(const LongNetDecoder& decoder, int64_t max_length, const EncoderOutput& encoded);

/// Final hidden states (B, n, dim), after the final norm, of tokens (B, n) at positions
/// cache.length() .. cache.length() + n - 1; appends their keys and values. Not recorded; no
/// dropout (inference). Single-row steps run the framework's own attention kernels on the GPU
/// when the attention kernel choice is Auto (see framework/ops/attention.h).
Tensor decode_hidden(const LongNetDecoder& decoder, const Tensor& tokens, DecoderCache& cache);
/// Logits (B, n, vocab) of the same rows: decoder.project(decode_hidden(...)).
Tensor decode_logits(const LongNetDecoder& decoder, const Tensor& tokens, DecoderCache& cache);

/// What and how to generate.
struct GenerationConfig {
  /// Tokens generated per sequence at most (>= 1).
  int64_t max_new_tokens = 128;
  /// A sequence ends after producing one of these (the stop token is part of its output).
  std::vector<int64_t> stop_tokens;
  SamplingConfig sampling;
  /// Random stream of each sequence (empty: 0, 1, ...): a prompt given the same stream and seed
  /// draws the same tokens alone or in any batch.
  std::vector<uint64_t> streams;
  /// Positions per prefill call: bounds the activation memory of long prompts.
  int64_t prefill_chunk = 4096;
};

/// One sequence's result.
struct GeneratedSequence {
  /// The generated tokens (not the prompt), the stop token included when one ended it.
  std::vector<int64_t> tokens;
  /// "stop" (a stop token) or "length" (max_new_tokens reached).
  std::string finish_reason;
};

/// Called with (sequence index, token) for each token as soon as it is chosen.
using TokenCallback = std::function<void(int64_t sequence, int64_t token)>;

/// Continues each prompt (non-empty, ids in the vocabulary) of a decoder-only LM. The model should
/// be in eval mode (decoding applies no dropout, so it matches the eval forward).
std::vector<GeneratedSequence> generate(const LongNetLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                        const GenerationConfig& config, const TokenCallback& on_token = {});

/// Encoder-decoder generation: the sources (padded with `pad_id` to a common length and masked)
/// are encoded once, then each decoder prompt (for example a BOS token) is continued.
std::vector<GeneratedSequence> generate(const LongNetEncoderDecoder& model,
                                        const std::vector<std::vector<int64_t>>& sources,
                                        const std::vector<std::vector<int64_t>>& prompts, int64_t pad_id,
                                        const GenerationConfig& config, const TokenCallback& on_token = {});

}  // namespace longnet
