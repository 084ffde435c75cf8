#include "models/generation.h"

#include <algorithm>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/ops.h"
#include "layers/norm.h"

namespace longnet {
namespace {

int64_t tensor_bytes(const Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(dtype_size(t.dtype())) : 0;
}

// One decoder layer over new rows x (B, n, dim): the layer's own composition without dropout,
// with the self-attention core decoding against `self` and the cross-attention reading keys and
// values computed once.
Tensor decode_layer(const TransformerLayer& layer, const Tensor& x, KvCache& self, const KeyValue* cross,
                    const Tensor& memory_padding_mask) {
  const MultiheadAttention& sa = layer.self_attn();
  const int64_t position = self.length();
  TransformerLayer::SublayerCalls calls;
  calls.self = [&](const Tensor& h, const Tensor& residual) {
    const KeyValue kv = sa.project_kv(h, position);
    const AttentionResult a = sa.core().decode(sa.project_q(h, position), kv.k, kv.v, self);
    return AttentionLayerOutput{sa.project_out(a.out, residual), Tensor()};
  };
  if (const MultiheadAttention* ca = layer.encoder_attn()) {
    LN_CHECK(cross != nullptr, "[generate] the decoder has cross-attention but the cache holds no encoder output");
    calls.cross = [&, ca](const Tensor& h, const Tensor& residual) {
      AttentionOptions options;
      options.key_padding_mask = memory_padding_mask;
      const AttentionResult c = ca->core().forward(ca->project_q(h, 0), cross->k, cross->v, options);
      return AttentionLayerOutput{ca->project_out(c.out, residual), Tensor()};
    };
  }
  return layer.compose(x, calls, false).x;
}

Device model_device(const LongNetDecoder& decoder) { return decoder.embed_tokens().weight().device(); }

// (B, n) i64 tokens on `device` from rows of equal length.
Tensor token_tensor(const std::vector<std::vector<int64_t>>& rows, Device device) {
  std::vector<int64_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  const auto b = static_cast<int64_t>(rows.size());
  return from_vector(flat, {b, b == 0 ? 0 : static_cast<int64_t>(rows.front().size())}, device);
}

void check_tokens(const char* what, const std::vector<std::vector<int64_t>>& seqs, int64_t vocab) {
  for (size_t b = 0; b < seqs.size(); ++b) {
    LN_CHECK(!seqs[b].empty(), "[generate] ", what, " ", b, " is empty (start it with a BOS token)");
    for (int64_t t : seqs[b]) {
      LN_CHECK(t >= 0 && t < vocab, "[generate] ", what, " ", b, " has token ", t, " outside the vocabulary of ", vocab);
    }
  }
}

void check_config(const GenerationConfig& c, size_t batch) {
  LN_CHECK(c.max_new_tokens >= 1, "[generate] max_new_tokens must be >= 1, got ", c.max_new_tokens);
  LN_CHECK(c.prefill_chunk >= 1, "[generate] prefill_chunk must be >= 1, got ", c.prefill_chunk);
  LN_CHECK(c.streams.empty() || c.streams.size() == batch, "[generate] ", c.streams.size(), " streams for ", batch,
           " prompts");
  check_sampling_config(c.sampling);
}

// The generation loop over a prepared cache (see the header for the shared-position scheme).
std::vector<GeneratedSequence> run_generation(const LongNetDecoder& decoder, DecoderCache& cache,
                                              const std::vector<std::vector<int64_t>>& prompts,
                                              const GenerationConfig& config, const TokenCallback& on_token) {
  const size_t batch = prompts.size();
  const Device device = model_device(decoder);
  size_t shortest = prompts.front().size();
  for (const auto& p : prompts) shortest = std::min(shortest, p.size());

  // The common prefix, in chunks; the logits of its last row predict the first new tokens.
  Tensor logits;
  for (size_t at = 0; at < shortest;) {
    const size_t n = std::min(shortest - at, static_cast<size_t>(config.prefill_chunk));
    std::vector<std::vector<int64_t>> chunk;
    for (const auto& p : prompts) chunk.emplace_back(p.begin() + static_cast<std::ptrdiff_t>(at), p.begin() + static_cast<std::ptrdiff_t>(at + n));
    const Tensor h = decode_hidden(decoder, token_tensor(chunk, device), cache);
    at += n;
    if (at == shortest) logits = decoder.project(h.narrow(1, static_cast<int64_t>(n) - 1, 1)).squeeze(1);
  }

  Sampler sampler(config.sampling, config.streams);
  std::vector<GeneratedSequence> out(batch);
  std::vector<std::vector<int64_t>> history = prompts;
  std::vector<bool> done(batch, false);
  for (size_t position = shortest;; ++position) {
    // Rows whose prompt is consumed draw the token at `position` from the logits of position - 1.
    std::vector<bool> drawing(batch);
    for (size_t b = 0; b < batch; ++b) drawing[b] = !done[b] && position >= prompts[b].size();
    if (std::find(drawing.begin(), drawing.end(), true) != drawing.end()) {
      const std::vector<int64_t> drawn = sampler.sample(logits, history, drawing);
      for (size_t b = 0; b < batch; ++b) {
        if (!drawing[b]) continue;
        const int64_t t = drawn[b];
        out[b].tokens.push_back(t);
        history[b].push_back(t);
        if (on_token) on_token(static_cast<int64_t>(b), t);
        if (std::find(config.stop_tokens.begin(), config.stop_tokens.end(), t) != config.stop_tokens.end()) {
          out[b].finish_reason = "stop";
        } else if (static_cast<int64_t>(out[b].tokens.size()) == config.max_new_tokens) {
          out[b].finish_reason = "length";
        }
        done[b] = !out[b].finish_reason.empty();
      }
    }
    if (std::find(done.begin(), done.end(), false) == done.end()) break;
    std::vector<std::vector<int64_t>> next(batch);
    for (size_t b = 0; b < batch; ++b) next[b] = {position < prompts[b].size() ? prompts[b][position] : history[b].back()};
    logits = decode_logits(decoder, token_tensor(next, device), cache).squeeze(1);
  }
  return out;
}

// The positions a generation may fill: the longest prompt and the token budget.
int64_t generation_length(const std::vector<std::vector<int64_t>>& prompts, const GenerationConfig& config) {
  size_t longest = 0;
  for (const auto& p : prompts) longest = std::max(longest, p.size());
  return static_cast<int64_t>(longest) + config.max_new_tokens;
}

}  // namespace

int64_t DecoderCache::bytes() const {
  int64_t total = 0;
  for (const KvCache& c : self) total += tensor_bytes(c.key_storage()) + tensor_bytes(c.value_storage());
  for (const KeyValue& kv : cross) total += tensor_bytes(kv.k) + tensor_bytes(kv.v);
  return total;
}

DecoderCache make_decoder_cache(const LongNetDecoder& decoder, int64_t max_length) {
  DecoderCache cache;
  cache.self.reserve(decoder.layers().size());
  for (size_t i = 0; i < decoder.layers().size(); ++i) cache.self.emplace_back(max_length);
  return cache;
}

DecoderCache make_decoder_cache(const LongNetDecoder& decoder, int64_t max_length, const EncoderOutput& encoded) {
  NoGradGuard no_grad;
  DecoderCache cache = make_decoder_cache(decoder, max_length);
  cache.memory_padding_mask = encoded.padding_mask;
  for (const auto& layer : decoder.layers()) {
    const MultiheadAttention* ca = layer->encoder_attn();
    LN_CHECK(ca != nullptr, "[generate] an encoder output was given but the decoder has no cross-attention");
    cache.cross.push_back(ca->project_kv(encoded.memory, 0));
  }
  return cache;
}

Tensor decode_hidden(const LongNetDecoder& decoder, const Tensor& tokens, DecoderCache& cache) {
  NoGradGuard no_grad;
  // cuDNN builds an execution plan per new attention shape, and every decoding step brings new
  // ones (the cache grows): single-row steps run our kernels unless a kernel was chosen.
  const bool step = tokens.dim() == 2 && tokens.size(1) == 1 && attention_kernel() == AttentionKernel::Auto;
  const AttentionKernelScope kernel(step ? AttentionKernel::Own : attention_kernel());
  LN_CHECK(cache.self.size() == decoder.layers().size(), "[generate] the cache has ", cache.self.size(),
           " layers, the decoder ", decoder.layers().size());
  Tensor x = decoder.embed(tokens);
  size_t i = 0;
  for (const auto& layer : decoder.layers()) {
    x = decode_layer(*layer, x, cache.self[i], cache.cross.empty() ? nullptr : &cache.cross[i],
                     cache.memory_padding_mask);
    ++i;
  }
  return decoder.layer_norm().forward(x);
}

Tensor decode_logits(const LongNetDecoder& decoder, const Tensor& tokens, DecoderCache& cache) {
  const Tensor h = decode_hidden(decoder, tokens, cache);
  NoGradGuard no_grad;
  return decoder.project(h);
}

std::vector<GeneratedSequence> generate(const LongNetLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                        const GenerationConfig& config, const TokenCallback& on_token) {
  if (prompts.empty()) return {};
  check_config(config, prompts.size());
  check_tokens("prompt", prompts, model.config().vocab_size);
  DecoderCache cache = make_decoder_cache(model.decoder(), generation_length(prompts, config));
  return run_generation(model.decoder(), cache, prompts, config, on_token);
}

std::vector<GeneratedSequence> generate(const LongNetEncoderDecoder& model,
                                        const std::vector<std::vector<int64_t>>& sources,
                                        const std::vector<std::vector<int64_t>>& prompts, int64_t pad_id,
                                        const GenerationConfig& config, const TokenCallback& on_token) {
  LN_CHECK(sources.size() == prompts.size(), "[generate] ", sources.size(), " sources for ", prompts.size(), " prompts");
  if (prompts.empty()) return {};
  check_config(config, prompts.size());
  const int64_t vocab = model.config().vocab_size;
  check_tokens("source", sources, vocab);
  check_tokens("prompt", prompts, vocab);
  size_t longest = 0;
  for (const auto& s : sources) longest = std::max(longest, s.size());
  std::vector<std::vector<int64_t>> padded = sources;
  std::vector<uint8_t> mask;
  for (auto& s : padded) {
    for (size_t j = 0; j < longest; ++j) mask.push_back(j >= s.size());
    s.resize(longest, pad_id);
  }
  const Device device = model_device(model.decoder());
  const auto b = static_cast<int64_t>(sources.size());
  EncoderOutput encoded;
  {
    NoGradGuard no_grad;
    encoded = model.encode(token_tensor(padded, device),
                           cast(from_vector(mask, {b, static_cast<int64_t>(longest)}, device), DType::Bool));
  }
  DecoderCache cache = make_decoder_cache(model.decoder(), generation_length(prompts, config), encoded);
  return run_generation(model.decoder(), cache, prompts, config, on_token);
}

}  // namespace longnet
