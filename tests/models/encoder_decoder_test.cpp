// The LongNet encoder-decoder: structure (shared embedding, dilated encoder, dense cross-attention),
// padding masks on both sides, causality of the decoder, gradients reaching the encoder, the loss,
// and a tiny copy task learned on the CPU.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "models/encoder_decoder.h"
#include "tests/models/tiny_training.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;

Tensor tokens_of(int64_t b, int64_t n, int64_t low, int64_t high, uint64_t seed) {
  Generator g(seed);
  return randint(low, high, {b, n}, DType::I64, Device::cpu(), &g);
}

// Sets tokens[b][from:] = value.
Tensor with_tail(const Tensor& tokens, int64_t b, int64_t from, int64_t value) {
  std::vector<int64_t> v = tokens.to_vector<int64_t>();
  const int64_t n = tokens.size(1);
  for (int64_t j = from; j < n; ++j) v[static_cast<size_t>(b * n + j)] = value;
  return from_vector(v, tokens.shape());
}

TEST(EncoderDecoder, StructureAndNames) {
  const ModelConfig c = model_preset("tiny_encoder_decoder");
  LongNetEncoderDecoder model(c, false);
  const StateDict s = model.state_dict();
  EXPECT_EQ(s.count("encoder.embed_tokens.weight"), 1u);
  EXPECT_EQ(s.count("decoder.embed_tokens.weight"), 0u);  // shared, listed once
  EXPECT_EQ(s.count("decoder.layers.1.encoder_attn.k_proj.weight"), 1u);
  EXPECT_EQ(s.count("decoder.layers.1.encoder_attn_layer_norm.weight"), 1u);
  EXPECT_EQ(s.count("encoder.layers.1.encoder_attn.k_proj.weight"), 0u);
  EXPECT_EQ(s.count("encoder.layer_norm.weight"), 1u);
  EXPECT_EQ(&model.decoder().embed_tokens(), &model.encoder().embed_tokens());
  for (const auto& layer : model.encoder().layers()) {
    EXPECT_EQ(layer->self_attn().core().name(), "dilated");
    EXPECT_FALSE(layer->causal());
  }
  for (const auto& layer : model.decoder().layers()) {
    EXPECT_EQ(layer->self_attn().core().name(), "dilated");
    ASSERT_NE(layer->encoder_attn(), nullptr);
    EXPECT_EQ(layer->encoder_attn()->core().name(), "dense");
    EXPECT_TRUE(layer->causal());
  }
  EXPECT_EQ(model.parameter_count(), analytic_parameter_count(c));
}

TEST(EncoderDecoder, SourcePaddingAndLaterTargetsChangeNothing) {
  const ModelConfig c = model_preset("tiny_encoder_decoder");
  LongNetEncoderDecoder model(c);
  model.eval();
  const int64_t pad = 0;
  Tensor source = tokens_of(2, 20, 1, c.vocab_size, 1);
  source = with_tail(source, 1, 14, pad);  // batch element 1 has 14 real tokens
  const Tensor target = tokens_of(2, 9, 1, c.vocab_size, 2);
  const Tensor mask = padding_mask_of(source, pad);
  EXPECT_EQ(sum(cast(mask, DType::F32)).item(), 6.0);
  const Tensor logits = model.forward(source, target, mask);
  ASSERT_EQ(logits.shape(), (Shape{2, 9, c.vocab_size}));
  // Other tokens at padded source positions (still marked as padding) change no logit.
  const Tensor other = with_tail(source, 1, 14, 5);
  EXPECT_TRUE(all_close(model.forward(other, target, mask), logits, 1e-5, 1e-5));
  // Without the mask they are attended to.
  EXPECT_FALSE(all_close(model.forward(other, target), model.forward(source, target), 1e-4, 1e-4));
  // Later target tokens change no earlier logit; the source changes all of them.
  const Tensor later = with_tail(target, 0, 6, 3);
  const Tensor changed = model.forward(source, later, mask);
  EXPECT_TRUE(all_close(changed.narrow(1, 0, 6), logits.narrow(1, 0, 6), 1e-5, 1e-5));
  const Tensor new_source = model.forward(with_tail(source, 0, 0, 7), target, mask);
  EXPECT_FALSE(all_close(new_source.narrow(0, 0, 1).narrow(1, 0, 1), logits.narrow(0, 0, 1).narrow(1, 0, 1), 1e-4, 1e-4));
}

TEST(EncoderDecoder, LossReachesEveryParameter) {
  ModelConfig c = model_preset("tiny_encoder_decoder");
  c.encoder_attention = "block_sparse";
  c.encoder_attention_config.block_size = 4;
  LongNetEncoderDecoder model(c);
  const Tensor source = tokens_of(2, 16, 0, c.vocab_size, 3), target = tokens_of(2, 8, 0, c.vocab_size, 4);
  const LossOutput out = model.loss(source, target, tokens_of(2, 8, 0, c.vocab_size, 5));
  EXPECT_NEAR(out.loss.item(), std::log(96.0), 1.0);
  out.loss.backward();
  for (const auto& [name, p] : model.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    const auto g = p.grad().to_vector<double>();
    EXPECT_TRUE(std::any_of(g.begin(), g.end(), [](double x) { return x != 0.0; })) << name;
  }
  EXPECT_NE(testing::error_message([&] { model.loss(source, target, zeros({2, 9}, DType::I64)); }).find("must match"),
            std::string::npos);
  EXPECT_NE(testing::error_message([&] { LongNetEncoderDecoder(model_preset("tiny")); }).find("needs an encoder_decoder config"),
            std::string::npos);
}

TEST(EncoderDecoder, LearnsToCopyTheSource) {
  // Target = the source's first tokens: the decoder must read them through cross-attention.
  ModelConfig c = model_preset("tiny_encoder_decoder");
  LongNetEncoderDecoder model(c);
  const Tensor source = tokens_of(2, 12, 1, c.vocab_size, 6);
  const Tensor copy = source.narrow(1, 0, 6).contiguous();
  const Tensor bos = zeros({2, 1}, DType::I64);
  const Tensor target_in = cat({bos, copy.narrow(1, 0, 5)}, 1);
  const auto losses =
      testing::train_adamw(model, [&] { return model.loss(source, target_in, copy).loss; }, 80, 1e-2);
  EXPECT_LT(losses.back(), 0.05) << "loss after " << losses.size() << " steps";
}

}  // namespace
}  // namespace longnet
