// Generation: decoding with the KV cache gives the logits of the full forward at every position
// (every attention core, decoder-only and encoder-decoder), greedy generation follows the full
// forward's argmax, a batch of prompts equals each prompt alone, stop tokens, streaming, seeds.
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "models/generation.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::relative_error;
using testing::error_message;

// The attention variants the models are decoded with: core name and pattern kind.
const std::vector<std::pair<std::string, std::string>> kKinds{
    {"dense", ""}, {"dilated", ""}, {"block_sparse", "local"}, {"block_sparse", "random"}, {"adaptive", ""}};

// The tiny preset (dim 32, 4 heads, 2 layers, vocab 96) with `core`: dilated segments (4, 8, 16)
// and rates (1, 2, 4), blocks of 4 rows, adaptive keeping 40% of the blocks.
ModelConfig tiny(const std::string& preset, const std::string& core, const std::string& pattern) {
  ModelConfig c = model_preset(preset);
  c.attention = core;
  c.attention_config.segment_lengths = {4, 8, 16};
  c.attention_config.dilation_rates = {1, 2, 4};
  c.attention_config.block_size = 4;
  c.attention_config.pattern.kind = pattern.empty() ? "local" : pattern;
  c.attention_config.pattern.random_blocks = 2;
  c.attention_config.sparsity = 0.6;
  c.attention_config.scorer_dim = 4;
  c.seed = 5;
  return c;
}

std::string describe(const std::pair<std::string, std::string>& kind) {
  return kind.first + (kind.second.empty() ? "" : "/" + kind.second);
}

Tensor random_tokens(int64_t b, int64_t n, int64_t vocab, uint64_t seed, Device device = Device::cpu()) {
  Generator g(seed);
  return randint(0, vocab, {b, n}, DType::I64, Device::cpu(), &g).to(device);
}

// Chunks covering n rows: a prefill of 11 rows, then single steps, or irregular sizes.
std::vector<std::vector<int64_t>> schedules(int64_t n) {
  std::vector<int64_t> steps{11}, ragged;
  for (int64_t at = 11; at < n; ++at) steps.push_back(1);
  const int64_t pattern[] = {3, 1, 7, 1, 1, 9, 2};
  for (int64_t at = 0, i = 0; at < n; ++i) {
    ragged.push_back(std::min(pattern[i % 7], n - at));
    at += ragged.back();
  }
  return {steps, ragged};
}

// Decodes `tokens` chunk by chunk and compares each chunk's logits with the rows of `full`.
void expect_decode_matches(const LongNetDecoder& decoder, const Tensor& tokens, const Tensor& full,
                           const std::function<DecoderCache()>& make_cache, double tol) {
  for (const auto& chunks : schedules(tokens.size(1))) {
    DecoderCache cache = make_cache();
    int64_t at = 0;
    for (int64_t n : chunks) {
      const Tensor logits = decode_logits(decoder, tokens.narrow(1, at, n), cache);
      EXPECT_TRUE(all_close(logits, full.narrow(1, at, n), tol, tol)) << "rows " << at << "+" << n;
      at += n;
    }
    EXPECT_EQ(cache.length(), tokens.size(1));
    // Keys and values of every layer (f32 on the CPU), plus the cross-attention ones.
    int64_t want = 0;
    for (const KvCache& c : cache.self) want += 2 * c.key_storage().numel() * 4;
    for (const KeyValue& kv : cache.cross) want += 2 * kv.k.numel() * 4;
    EXPECT_EQ(cache.bytes(), want);
    EXPECT_GE(cache.self[0].key_storage().numel(), tokens.numel() * decoder.config().dim);
  }
}

TEST(Generation, DecodedLogitsEqualTheForwardForEveryCore) {
  NoGradGuard no_grad;
  for (const auto& kind : kKinds) {
    SCOPED_TRACE(describe(kind));
    LongNetLM model(tiny("tiny", kind.first, kind.second));
    model.eval();
    const Tensor tokens = random_tokens(2, 37, model.config().vocab_size, 1);
    const Tensor full = model.forward(tokens);
    expect_decode_matches(model.decoder(), tokens, full, [&] { return make_decoder_cache(model.decoder(), 37); }, 1e-4);
  }
}

TEST(Generation, EncoderDecoderDecodesWithCrossAttentionComputedOnce) {
  NoGradGuard no_grad;
  for (const auto& kind : kKinds) {
    SCOPED_TRACE(describe(kind));
    LongNetEncoderDecoder model(tiny("tiny_encoder_decoder", kind.first, kind.second));
    model.eval();
    // The second source is padded after 17 tokens.
    const Tensor source = random_tokens(2, 23, model.config().vocab_size, 2);
    std::vector<uint8_t> pad(46, 0);
    for (int64_t j = 17; j < 23; ++j) pad[static_cast<size_t>(23 + j)] = 1;
    const Tensor mask = cast(from_vector(pad, {2, 23}, Device::cpu()), DType::Bool);
    const EncoderOutput encoded = model.encode(source, mask);
    const Tensor target = random_tokens(2, 19, model.config().vocab_size, 3);
    const Tensor full = model.decode(target, encoded);
    expect_decode_matches(model.decoder(), target, full,
                          [&] { return make_decoder_cache(model.decoder(), 19, encoded); }, 1e-4);
  }
}

std::vector<std::vector<int64_t>> token_rows(const Tensor& t) {
  const auto v = t.to_vector<int64_t>();
  std::vector<std::vector<int64_t>> rows;
  for (int64_t b = 0; b < t.size(0); ++b) rows.emplace_back(v.begin() + b * t.size(1), v.begin() + (b + 1) * t.size(1));
  return rows;
}

GenerationConfig greedy(int64_t max_new) {
  GenerationConfig c;
  c.max_new_tokens = max_new;
  c.sampling.temperature = 0.0;
  c.prefill_chunk = 4;  // several prefill calls
  return c;
}

TEST(Generation, GreedyTokensAreTheArgmaxOfTheForwardOverTheResult) {
  NoGradGuard no_grad;
  for (const auto& kind : kKinds) {
    SCOPED_TRACE(describe(kind));
    LongNetLM model(tiny("tiny", kind.first, kind.second));
    model.eval();
    const std::vector<int64_t> prompt = token_rows(random_tokens(1, 9, model.config().vocab_size, 4))[0];
    const auto got = generate(model, {prompt}, greedy(20));
    ASSERT_EQ(got[0].tokens.size(), 20u);
    EXPECT_EQ(got[0].finish_reason, "length");
    // The whole sequence through the forward: each generated token is the argmax of the row
    // before it (an independent computation: no cache, one call).
    std::vector<int64_t> all = prompt;
    all.insert(all.end(), got[0].tokens.begin(), got[0].tokens.end());
    const Tensor logits = model.forward(from_vector(all, {1, static_cast<int64_t>(all.size())}, Device::cpu()));
    const auto best = argmax(logits, 2).to_vector<int64_t>();
    for (size_t i = 0; i < got[0].tokens.size(); ++i) EXPECT_EQ(got[0].tokens[i], best[prompt.size() - 1 + i]) << i;
  }
}

TEST(Generation, BatchOfPromptsEqualsEachPromptAlone) {
  NoGradGuard no_grad;
  GenerationConfig sampled;
  sampled.max_new_tokens = 12;
  sampled.sampling.temperature = 0.9;
  sampled.sampling.top_k = 20;
  sampled.sampling.top_p = 0.9;
  sampled.sampling.repetition_penalty = 1.3;
  sampled.sampling.seed = 42;
  sampled.streams = {10, 11, 12};
  for (const auto& kind : kKinds) {
    SCOPED_TRACE(describe(kind));
    LongNetLM model(tiny("tiny", kind.first, kind.second));
    model.eval();
    // The adaptive core and the random pattern route as the forward over the cache's length,
    // which in a batch follows the longest prompt: equal lengths for them.
    const bool length_routed = kind.first == "adaptive" || kind.second == "random";
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t len : length_routed ? std::vector<int64_t>{6, 6, 6} : std::vector<int64_t>{5, 9, 2}) {
      prompts.push_back(token_rows(random_tokens(1, len, model.config().vocab_size, static_cast<uint64_t>(20 + len) + prompts.size()))[0]);
    }
    for (GenerationConfig c : {greedy(12), sampled}) {
      const auto batch = generate(model, prompts, c);
      for (size_t b = 0; b < prompts.size(); ++b) {
        GenerationConfig alone = c;
        if (!c.streams.empty()) alone.streams = {c.streams[b]};
        EXPECT_EQ(generate(model, {prompts[b]}, alone)[0].tokens, batch[b].tokens) << "prompt " << b;
      }
    }
  }
}

TEST(Generation, StopTokensEndSequencesAndTokensStream) {
  NoGradGuard no_grad;
  LongNetLM model(tiny("tiny", "dilated", ""));
  model.eval();
  const auto prompts = token_rows(random_tokens(2, 7, model.config().vocab_size, 6));
  const auto free_run = generate(model, prompts, greedy(15));
  // Stop sequence 0 at the first token (after its first) not produced before.
  const auto& t0 = free_run[0].tokens;
  size_t stop_at = 1;
  while (stop_at < t0.size() && std::find(t0.begin(), t0.begin() + static_cast<std::ptrdiff_t>(stop_at), t0[stop_at]) != t0.begin() + static_cast<std::ptrdiff_t>(stop_at)) ++stop_at;
  ASSERT_LT(stop_at, t0.size());
  GenerationConfig c = greedy(15);
  c.stop_tokens = {t0[stop_at]};
  std::map<int64_t, std::vector<int64_t>> streamed;
  const auto got = generate(model, prompts, c, [&](int64_t seq, int64_t tok) { streamed[seq].push_back(tok); });
  EXPECT_EQ(got[0].tokens, std::vector<int64_t>(t0.begin(), t0.begin() + static_cast<std::ptrdiff_t>(stop_at) + 1));
  EXPECT_EQ(got[0].finish_reason, "stop");
  // Sequence 1 runs on unchanged unless it meets the same token.
  const auto& t1 = free_run[1].tokens;
  const auto hit = std::find(t1.begin(), t1.end(), t0[stop_at]);
  EXPECT_EQ(got[1].tokens, std::vector<int64_t>(t1.begin(), hit == t1.end() ? t1.end() : hit + 1));
  EXPECT_EQ(got[1].finish_reason, hit == t1.end() ? "length" : "stop");
  EXPECT_EQ(streamed[0], got[0].tokens);
  EXPECT_EQ(streamed[1], got[1].tokens);
}

TEST(Generation, SeedsRepeat) {
  NoGradGuard no_grad;
  LongNetLM model(tiny("tiny", "dilated", ""));
  model.eval();
  const auto prompts = token_rows(random_tokens(2, 4, model.config().vocab_size, 7));
  GenerationConfig c;
  c.max_new_tokens = 16;
  c.sampling.temperature = 1.0;
  c.sampling.seed = 1;
  const auto a = generate(model, prompts, c), b = generate(model, prompts, c);
  c.sampling.seed = 2;
  const auto d = generate(model, prompts, c);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(a[i].tokens, b[i].tokens);
  EXPECT_TRUE(a[0].tokens != d[0].tokens || a[1].tokens != d[1].tokens);
}

TEST(Generation, EncoderDecoderGenerationEqualsItsForward) {
  NoGradGuard no_grad;
  LongNetEncoderDecoder model(tiny("tiny_encoder_decoder", "dilated", ""));
  model.eval();
  const int64_t pad = 0;
  auto sources = token_rows(random_tokens(2, 13, model.config().vocab_size, 8));
  sources[1].resize(8);  // a shorter source: padded and masked in the batch
  for (auto& s : sources) std::replace(s.begin(), s.end(), pad, int64_t{1});
  const std::vector<std::vector<int64_t>> prompts{{2}, {2}};
  const auto got = generate(model, sources, prompts, pad, greedy(10));
  for (size_t b = 0; b < sources.size(); ++b) {
    // Alone, through the encoder and the decoder's full forward.
    const Tensor src = from_vector(sources[b], {1, static_cast<int64_t>(sources[b].size())}, Device::cpu());
    std::vector<int64_t> target = prompts[b];
    target.insert(target.end(), got[b].tokens.begin(), got[b].tokens.end());
    const Tensor logits = model.decode(from_vector(target, {1, static_cast<int64_t>(target.size())}, Device::cpu()),
                                       model.encode(src));
    const auto best = argmax(logits, 2).to_vector<int64_t>();
    for (size_t i = 0; i < got[b].tokens.size(); ++i) EXPECT_EQ(got[b].tokens[i], best[i]) << "sequence " << b << " token " << i;
  }
}

TEST(Generation, RejectsBadInput) {
  LongNetLM model(tiny("tiny", "dense", ""));
  EXPECT_NE(error_message([&] { generate(model, {{1, 2}, {}}, greedy(3)); }).find("prompt 1 is empty"), std::string::npos);
  EXPECT_NE(error_message([&] { generate(model, {{1, 96}}, greedy(3)); }).find("token 96 outside the vocabulary of 96"),
            std::string::npos);
  EXPECT_NE(error_message([&] { generate(model, {{1}}, greedy(0)); }).find("max_new_tokens must be >= 1"),
            std::string::npos);
  GenerationConfig c = greedy(3);
  c.streams = {1, 2};
  EXPECT_NE(error_message([&] { generate(model, {{1}}, c); }).find("2 streams for 1 prompts"), std::string::npos);
  DecoderCache cache = make_decoder_cache(model.decoder(), 4);
  EXPECT_NE(error_message([&] { decode_logits(model.decoder(), from_vector(std::vector<int64_t>{1, 2, 3, 4, 5}, {1, 5}, Device::cpu()), cache); })
                .find("exceed max_length 4"),
            std::string::npos);
  LongNetEncoderDecoder ed(tiny("tiny_encoder_decoder", "dense", ""));
  EXPECT_NE(error_message([&] { generate(ed, {{1}}, {{1}, {2}}, 0, greedy(2)); }).find("1 sources for 2 prompts"),
            std::string::npos);
}

TEST(CudaGeneration, DecodedLogitsMatchTheForwardInBf16) {
  LN_REQUIRE_GPU();
  // bf16 activations: decoding takes other rounding paths than the forward (keys read from the
  // cache, other tile orders), so logits agree to bf16 precision: relative error below 3e-2.
  constexpr double kTolerance = 3e-2;
  const Device gpu = Device::cuda(0);
  DefaultDeviceGuard on_gpu(gpu);
  NoGradGuard no_grad;
  for (const auto& kind : kKinds) {
    SCOPED_TRACE(describe(kind));
    ModelConfig c = tiny("tiny", kind.first, kind.second);
    c.dim = 128;  // head dim 32, which the GPU kernels take
    c.ffn_dim = 256;
    c.attention_config.segment_lengths = {32, 64, 128};
    c.attention_config.block_size = 32;
    c.compute_dtype = DType::BF16;
    LongNetLM model(c);
    model.eval();
    const int64_t n = 150;
    const Tensor tokens = random_tokens(2, n, c.vocab_size, 9, gpu);
    const Tensor full = model.forward(tokens);
    DecoderCache cache = make_decoder_cache(model.decoder(), n);
    int64_t at = 0;
    for (int64_t m : {70, 1, 1, 33, 1}) {
      const Tensor logits = decode_logits(model.decoder(), tokens.narrow(1, at, m), cache);
      EXPECT_LT(relative_error(logits, full.narrow(1, at, m)), kTolerance) << "rows " << at << "+" << m;
      at += m;
    }
    for (; at < n; ++at) {
      const Tensor logits = decode_logits(model.decoder(), tokens.narrow(1, at, 1), cache);
      EXPECT_LT(relative_error(logits, full.narrow(1, at, 1)), kTolerance) << "row " << at;
    }
  }
}

}  // namespace
}  // namespace longnet
