// The layers in f64: gradient checks of every layer against finite differences (inputs and
// parameters), multi-head attention and the SwiGLU feed-forward against naive references, the
// layer wiring of pre-LN and sub-LN, causality and key padding, every attention core inside a
// layer, and activation checkpointing reproducing outputs and gradients.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "layers/embedding.h"
#include "layers/feed_forward.h"
#include "layers/linear.h"
#include "layers/multihead_attention.h"
#include "layers/norm.h"
#include "layers/transformer.h"
#include "tests/support/attention_reference.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::leaf;

// f64 parameters, so that finite differences are exact enough.
Initializer f64_init(uint64_t seed) { return Initializer(seed, true, DType::F64); }

// The inputs a gradient check perturbs: `x` (when defined) and every parameter of `m`.
std::vector<Tensor> with_params(const std::vector<Tensor>& xs, const Module& m) {
  std::vector<Tensor> in = xs;
  for (const Tensor& p : m.parameters()) in.push_back(p);
  return in;
}

// Parameters of a trained model are not at their initial values (zero biases, unit norm weights);
// random ones make the checks see every term.
void randomise(const Module& m, uint64_t seed) {
  NoGradGuard no_grad;
  Generator g(seed);
  for (const Tensor& p : m.parameters()) add_(p, mul(randn(p.shape(), p.dtype(), Device::cpu(), &g), 0.3));
}

// A (B, n) bool mask padding the last pad[b] positions of batch element b.
Tensor padding_mask(int64_t n, const std::vector<int64_t>& pad) {
  std::vector<uint8_t> m;
  for (int64_t p : pad) {
    for (int64_t j = 0; j < n; ++j) m.push_back(j >= n - p);
  }
  return cast(from_vector(m, {static_cast<int64_t>(pad.size()), n}), DType::Bool);
}

TEST(Layers, LinearEmbeddingAndNormGradients) {
  Initializer init = f64_init(1);
  Linear lin(5, 3, true, init);
  Linear no_bias(5, 3, false, init);
  EXPECT_FALSE(no_bias.bias().defined());
  LayerNorm ln(5, init);
  RMSNorm rms(5, init);
  Embedding emb(7, 4, init);
  for (const Module* m : std::vector<const Module*>{&lin, &ln, &rms}) randomise(*m, 2);
  const Tensor x = leaf({2, 3, 5}, 3);
  EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return lin.forward(in[0]); }, with_params({x}, lin)));
  EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return ln.forward(in[0]); }, with_params({x}, ln)));
  EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return rms.forward(in[0]); }, with_params({x}, rms)));
  const Tensor ids = from_vector(std::vector<int64_t>{0, 3, 3, 6, 1, 0}, {2, 3});
  EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>&) { return emb.forward(ids); }, emb.parameters()));
  // Linear is x W^T + b, checked by hand.
  const auto w = lin.weight().to_vector<double>(), b = lin.bias().to_vector<double>(), xv = x.to_vector<double>();
  const auto y = lin.forward(x).to_vector<double>();
  for (int64_t r = 0; r < 6; ++r) {
    for (int64_t o = 0; o < 3; ++o) {
      double want = b[static_cast<size_t>(o)];
      for (int64_t i = 0; i < 5; ++i) want += xv[static_cast<size_t>(r * 5 + i)] * w[static_cast<size_t>(o * 5 + i)];
      EXPECT_NEAR(y[static_cast<size_t>(r * 3 + o)], want, 1e-12);
    }
  }
}

TEST(Layers, LinearCastsMasterWeightsToTheActivationDtype) {
  Initializer init(4);
  Linear lin(8, 4, true, init);
  const Tensor x = randn({3, 8}, DType::BF16);
  const Tensor y = lin.forward(x);
  EXPECT_EQ(y.dtype(), DType::BF16);
  sum(y).backward();
  EXPECT_EQ(lin.weight().grad().dtype(), DType::F32);
  EXPECT_TRUE(all_close(y.to(DType::F32), lin.forward(x.to(DType::F32)), 0.05, 0.02));
}

TEST(Layers, FeedForwardGradients) {
  for (const std::string kind : {"gelu", "swiglu"}) {
    for (bool sub_ln : {false, true}) {
      Initializer init = f64_init(5);
      FeedForwardConfig c;
      c.dim = 4;
      c.hidden = 6;
      c.kind = kind;
      c.sub_ln = sub_ln;
      FeedForward ffn(c, init);
      randomise(ffn, 6);
      const Tensor x = leaf({2, 3, 4}, 7);
      EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return ffn.forward(in[0]); }, with_params({x}, ffn)))
          << kind << " sub_ln " << sub_ln;
    }
  }
}

TEST(Layers, SwigluMatchesNaiveLoops) {
  Initializer init = f64_init(8);
  FeedForwardConfig c;
  c.dim = 3;
  c.hidden = 5;
  c.kind = "swiglu";
  FeedForward ffn(c, init);
  randomise(ffn, 9);
  const StateDict s = ffn.state_dict();
  const auto w1 = s.at("fc1.weight").to_vector<double>(), b1 = s.at("fc1.bias").to_vector<double>();
  const auto wg = s.at("gate.weight").to_vector<double>(), bg = s.at("gate.bias").to_vector<double>();
  const auto w2 = s.at("fc2.weight").to_vector<double>(), b2 = s.at("fc2.bias").to_vector<double>();
  const Tensor x = leaf({4, 3}, 10);
  const auto xv = x.to_vector<double>(), y = ffn.forward(x).to_vector<double>();
  for (size_t r = 0; r < 4; ++r) {
    std::vector<double> h(5);
    for (size_t j = 0; j < 5; ++j) {
      double a = b1[j], g = bg[j];
      for (size_t i = 0; i < 3; ++i) {
        a += w1[j * 3 + i] * xv[r * 3 + i];
        g += wg[j * 3 + i] * xv[r * 3 + i];
      }
      h[j] = g / (1.0 + std::exp(-g)) * a;
    }
    for (size_t o = 0; o < 3; ++o) {
      double want = b2[o];
      for (size_t j = 0; j < 5; ++j) want += w2[o * 5 + j] * h[j];
      EXPECT_NEAR(y[r * 3 + o], want, 1e-12);
    }
  }
}

MultiheadAttentionConfig mha_config(int64_t dim, int64_t heads, const std::string& core = "dense") {
  MultiheadAttentionConfig c;
  c.dim = dim;
  c.heads = heads;
  c.core = core;
  c.attention.segment_lengths = {2, 4};
  c.attention.dilation_rates = {1, 2};
  c.attention.block_size = 2;
  c.attention.sparsity = 0.5;
  c.attention.param_dtype = DType::F64;
  return c;
}

// x (..., in) W^T + b in plain f64 loops over a (rows, in) matrix.
std::vector<double> affine(const std::vector<double>& x, int64_t rows, int64_t in, const Tensor& w, const Tensor& b) {
  const auto wv = w.to_vector<double>(), bv = b.to_vector<double>();
  const int64_t out = w.size(0);
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out; ++o) {
      double s = bv[static_cast<size_t>(o)];
      for (int64_t i = 0; i < in; ++i) s += x[static_cast<size_t>(r * in + i)] * wv[static_cast<size_t>(o * in + i)];
      y[static_cast<size_t>(r * out + o)] = s;
    }
  }
  return y;
}

TEST(MultiheadAttention, SelfAndCrossMatchNaiveReference) {
  const int64_t B = 2, N = 5, M = 7, D = 8, H = 2;
  for (bool cross : {false, true}) {
    for (bool causal : {false, true}) {
      if (cross && causal) continue;
      Initializer init = f64_init(11);
      MultiheadAttentionConfig c = mha_config(D, H);
      if (cross) c.kv_dim = 6;
      MultiheadAttention mha(c, init);
      randomise(mha, 12);
      const Tensor x = leaf({B, N, D}, 13), mem = leaf({B, M, 6}, 14);
      const Tensor src = cross ? mem : x;
      const int64_t nk = src.size(1);
      AttentionCall call;
      call.causal = causal;
      call.key_padding_mask = padding_mask(nk, {0, 2});
      const Tensor got = mha.forward(x, cross ? mem : Tensor(), call).out;
      // Reference: projections by loops, attention by the naive loops of the attention tests, output
      // projection by loops.
      const StateDict s = mha.state_dict();
      const auto q = affine(x.to_vector<double>(), B * N, D, s.at("q_proj.weight"), s.at("q_proj.bias"));
      const auto k = affine(src.to_vector<double>(), B * nk, src.size(2), s.at("k_proj.weight"), s.at("k_proj.bias"));
      const auto v = affine(src.to_vector<double>(), B * nk, src.size(2), s.at("v_proj.weight"), s.at("v_proj.bias"));
      const auto keys = [&](int64_t b, int64_t, int64_t i, int64_t j) {
        const bool padded = b == 1 && j >= nk - 2;
        return padded || (causal && j > i) ? 0.0 : 1.0;
      };
      const auto att = testing::naive_attention(from_vector(q, {B, N, H, D / H}), from_vector(k, {B, nk, H, D / H}),
                                                from_vector(v, {B, nk, H, D / H}), keys, 1.0 / std::sqrt(D / H));
      const auto want = affine(att.out, B * N, D, s.at("out_proj.weight"), s.at("out_proj.bias"));
      EXPECT_TRUE(all_close(got, from_vector(want, {B, N, D}), 1e-12, 1e-10)) << "cross " << cross << " causal " << causal;
    }
  }
}

TEST(MultiheadAttention, PiecesComposeToForwardWithPositions) {
  Initializer init = f64_init(15);
  MultiheadAttentionConfig c = mha_config(8, 2);
  c.sub_ln = true;
  RotaryConfig rc;
  rc.head_dim = 4;
  MultiheadAttention mha(c, init, std::make_shared<RotaryEmbedding>(rc));
  randomise(mha, 16);
  const Tensor x = leaf({1, 6, 8}, 17);
  AttentionCall call;
  call.causal = true;
  call.positions = 9;
  const Tensor whole = mha.forward(x, Tensor(), call).out;
  // What a KV-cache decoder does: project, attend with the core, project out.
  const Tensor q = mha.project_q(x, 9);
  const KeyValue kv = mha.project_kv(x, 9);
  AttentionOptions o;
  o.causal = true;
  const Tensor pieces = mha.project_out(mha.core().forward(q, kv.k, kv.v, o).out);
  EXPECT_TRUE(all_close(pieces, whole, 0.0, 0.0));
  // Relative positions: shifting every position leaves the scores, hence the output, unchanged...
  call.positions = 0;
  EXPECT_TRUE(all_close(mha.forward(x, Tensor(), call).out, whole, 1e-12, 1e-10));
  // ...while the same weights without positions give another output.
  Initializer same = f64_init(15);
  MultiheadAttention plain(c, same);
  randomise(plain, 16);
  EXPECT_FALSE(all_close(plain.forward(x, Tensor(), call).out, whole, 1e-6, 1e-6));
  EXPECT_EQ(mha.head_dim(), 4);
  std::vector<std::string> names;
  for (const auto& [name, t] : mha.named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight",
                                             "v_proj.bias", "inner_attn_ln.weight", "inner_attn_ln.bias", "out_proj.weight",
                                             "out_proj.bias"}));
}

TEST(MultiheadAttention, Gradients) {
  for (bool sub_ln : {false, true}) {
    Initializer init = f64_init(18);
    MultiheadAttentionConfig c = mha_config(8, 2);
    c.sub_ln = sub_ln;
    RotaryConfig rc;
    rc.head_dim = 4;
    MultiheadAttention self_attn(c, init, std::make_shared<RotaryEmbedding>(rc));
    randomise(self_attn, 19);
    const Tensor x = leaf({1, 4, 8}, 20);
    AttentionCall call;
    call.causal = true;
    call.positions = 2;
    EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return self_attn.forward(in[0], Tensor(), call).out; },
                                   with_params({x}, self_attn)))
        << "self, sub_ln " << sub_ln;
    MultiheadAttentionConfig cc = mha_config(8, 2);
    cc.kv_dim = 6;
    cc.sub_ln = sub_ln;
    MultiheadAttention cross(cc, init);
    randomise(cross, 21);
    const Tensor mem = leaf({1, 3, 6}, 22);
    EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return cross.forward(in[0], in[1], {}).out; },
                                   with_params({x, mem}, cross)))
        << "cross, sub_ln " << sub_ln;
  }
}

TEST(MultiheadAttention, RejectsBadShapes) {
  Initializer init(1);
  EXPECT_NE(testing::error_message([&] { MultiheadAttention(mha_config(10, 3), init); }).find("multiple of heads 3"),
            std::string::npos);
  const std::string unknown = testing::error_message([&] { MultiheadAttention(mha_config(8, 2, "ring9"), init); });
  EXPECT_NE(unknown.find("unknown core 'ring9'"), std::string::npos) << unknown;
  MultiheadAttention mha(mha_config(8, 2), init);
  const std::string bad_x = testing::error_message([&] { mha.forward(zeros({2, 3, 6}), Tensor(), {}); });
  EXPECT_NE(bad_x.find("(2, 3, 6)"), std::string::npos) << bad_x;
  AttentionCall causal_cross;
  causal_cross.causal = true;
  EXPECT_NE(testing::error_message([&] { mha.forward(zeros({2, 3, 8}), zeros({2, 4, 8}), causal_cross); })
                .find("cannot be causal"),
            std::string::npos);
}

TransformerLayerConfig layer_config(const std::string& placement, const std::string& core = "dense") {
  TransformerLayerConfig c;
  c.dim = 8;
  c.heads = 2;
  c.ffn_dim = 12;
  c.norm_placement = placement;
  c.self_attention = core;
  c.self_attention_config.segment_lengths = {2, 4};
  c.self_attention_config.dilation_rates = {1, 2};
  c.self_attention_config.block_size = 2;
  c.self_attention_config.sparsity = 0.5;
  c.self_attention_config.param_dtype = DType::F64;
  return c;
}

std::shared_ptr<RotaryEmbedding> xpos(int64_t head_dim) {
  RotaryConfig rc;
  rc.head_dim = head_dim;
  rc.scale_base = 32.0;
  return std::make_shared<RotaryEmbedding>(rc);
}

TEST(TransformerLayer, WiringOfPreLnAndSubLn) {
  for (const std::string placement : {"pre_ln", "sub_ln"}) {
    Initializer init = f64_init(23);
    DecoderLayer layer(layer_config(placement), init, xpos(4));
    randomise(layer, 24);
    const Tensor x = leaf({2, 5, 8}, 25);
    // x + attn(norm1 x) then + ffn(norm2 h), through the layer's own submodules.
    AttentionCall call;
    call.causal = true;
    call.positions = 3;
    const StateDict s = layer.state_dict();
    EXPECT_EQ(s.count("self_attn.inner_attn_ln.weight"), placement == "sub_ln" ? 1u : 0u);
    EXPECT_EQ(s.count("ffn.ffn_layernorm.weight"), placement == "sub_ln" ? 1u : 0u);
    LayerNorm norm1(8, init), norm2(8, init);
    norm1.load_state_dict({{"weight", s.at("self_attn_layer_norm.weight")}, {"bias", s.at("self_attn_layer_norm.bias")}});
    norm2.load_state_dict({{"weight", s.at("final_layer_norm.weight")}, {"bias", s.at("final_layer_norm.bias")}});
    const Tensor h = add(x, layer.self_attn().forward(norm1.forward(x), Tensor(), call).out);
    const Tensor want = add(h, layer.ffn().forward(norm2.forward(h)));
    LayerContext ctx;
    ctx.positions = 3;
    EXPECT_TRUE(all_close(layer.forward(x, ctx).x, want, 1e-14, 1e-12)) << placement;
  }
}

TEST(TransformerLayer, EncoderAndDecoderGradients) {
  for (const std::string placement : {"pre_ln", "sub_ln"}) {
    Initializer init = f64_init(26);
    EncoderLayer enc(layer_config(placement), init, xpos(4));
    randomise(enc, 27);
    const Tensor x = leaf({1, 4, 8}, 28);
    LayerContext ctx;
    ctx.padding_mask = padding_mask(4, {1});
    EXPECT_TRUE(testing::gradcheck([&](const std::vector<Tensor>& in) { return enc.forward(in[0], ctx).x; }, with_params({x}, enc)))
        << "encoder " << placement;
    TransformerLayerConfig dc = layer_config(placement);
    dc.cross_attention = true;
    dc.memory_dim = 6;
    DecoderLayer dec(dc, init, xpos(4));
    randomise(dec, 29);
    const Tensor mem = leaf({1, 3, 6}, 30);
    LayerContext dctx;
    dctx.memory_padding_mask = padding_mask(3, {1});
    dctx.positions = 1;
    EXPECT_TRUE(testing::gradcheck(
        [&](const std::vector<Tensor>& in) {
          LayerContext c = dctx;
          c.memory = in[1];
          return dec.forward(in[0], c).x;
        },
        with_params({x, mem}, dec)))
        << "decoder " << placement;
  }
}

// Every attention core in a decoder layer: causality (later tokens change no earlier output) and
// gradients that reach the input and every parameter.
class LayerWithCore : public ::testing::TestWithParam<std::string> {};

TEST_P(LayerWithCore, CausalForwardBackward) {
  Initializer init = f64_init(31);
  DecoderLayer layer(layer_config("sub_ln", GetParam()), init, xpos(4));
  randomise(layer, 32);
  const int64_t n = 8;
  const Tensor x = leaf({2, n, 8}, 33);
  const LayerOutput out = layer.forward(x);
  ASSERT_EQ(out.x.shape(), x.shape());
  Tensor y;
  {
    NoGradGuard no_grad;
    y = x.detach().clone();
    fill_(y.narrow(1, 5, 3), 7.0);
  }
  const Tensor changed = layer.forward(y).x;
  EXPECT_TRUE(all_close(changed.narrow(1, 0, 5), out.x.narrow(1, 0, 5), 1e-12, 1e-12)) << GetParam();
  EXPECT_FALSE(all_close(changed.narrow(1, 5, 3), out.x.narrow(1, 5, 3), 1e-6, 1e-6));
  Tensor loss = sum(mul(out.x, out.x));
  if (out.aux_loss.defined()) loss = add(loss, out.aux_loss);
  loss.backward();
  ASSERT_TRUE(x.grad().defined());
  for (const auto& [name, p] : layer.named_parameters()) EXPECT_TRUE(p.grad().defined()) << GetParam() << " " << name;
}

INSTANTIATE_TEST_SUITE_P(Cores, LayerWithCore, ::testing::Values("dense", "dilated", "block_sparse", "adaptive"));

// Padded keys change nothing. Not for the adaptive core: its scorer pools q and k blocks including
// padded rows, so their content may change which blocks unpadded queries visit.
class LayerWithFixedPatternCore : public ::testing::TestWithParam<std::string> {};

TEST_P(LayerWithFixedPatternCore, EncoderIgnoresPaddedKeys) {
  Initializer init = f64_init(34);
  EncoderLayer layer(layer_config("pre_ln", GetParam()), init);
  randomise(layer, 35);
  const int64_t n = 8;
  const Tensor x = leaf({2, n, 8}, 36);
  LayerContext ctx;
  ctx.padding_mask = padding_mask(n, {0, 2});
  const Tensor a = layer.forward(x, ctx).x;
  Tensor y;
  {
    NoGradGuard no_grad;
    y = x.detach().clone();
    fill_(y.narrow(0, 1, 1).narrow(1, n - 2, 2), -5.0);  // only padded rows of batch element 1
  }
  const Tensor b = layer.forward(y, ctx).x;
  EXPECT_TRUE(all_close(b.narrow(0, 1, 1).narrow(1, 0, n - 2), a.narrow(0, 1, 1).narrow(1, 0, n - 2), 1e-12, 1e-12))
      << GetParam();
  EXPECT_TRUE(all_close(b.narrow(0, 0, 1), a.narrow(0, 0, 1), 0.0, 0.0));
}

INSTANTIATE_TEST_SUITE_P(Cores, LayerWithFixedPatternCore, ::testing::Values("dense", "dilated", "block_sparse"));

TEST(TransformerLayer, AdaptiveCoreParametersAreRegistered) {
  Initializer init = f64_init(37);
  DecoderLayer layer(layer_config("sub_ln", "adaptive"), init);
  const StateDict s = layer.state_dict();
  ASSERT_EQ(s.count("self_attn.core.0"), 1u);
  ASSERT_EQ(s.count("self_attn.core.1"), 1u);
  const std::vector<Tensor> core_params = layer.self_attn().core().parameters();
  EXPECT_EQ(s.at("self_attn.core.0").impl(), core_params[0].impl());
  EXPECT_EQ(s.at("self_attn.core.0").shape(), (Shape{4, 16}));
}

TEST(TransformerLayer, CheckpointingReproducesOutputsAndGradients) {
  for (const std::string core : {"dense", "dilated"}) {
    TransformerLayerConfig c = layer_config("sub_ln", core);
    c.cross_attention = true;
    c.dropout = 0.2;
    c.activation_dropout = 0.1;
    Initializer init = f64_init(38);
    DecoderLayer layer(c, init, xpos(4));
    randomise(layer, 39);
    const Tensor x = leaf({2, 6, 8}, 40), mem = leaf({2, 3, 8}, 41);
    std::vector<std::vector<Tensor>> grads;
    std::vector<Tensor> outs;
    for (bool ckpt : {false, true}) {
      layer.set_checkpoint(ckpt);
      manual_seed(77);  // the same dropout masks in both runs
      LayerContext ctx;
      ctx.memory = mem;
      const Tensor y = layer.forward(x, ctx).x;
      EXPECT_EQ(y.grad_fn() != nullptr, true);
      sum(mul(y, y)).backward();
      std::vector<Tensor> g{x.grad(), mem.grad()};
      for (const Tensor& p : layer.parameters()) g.push_back(p.grad());
      grads.push_back(g);
      outs.push_back(y);
      x.set_grad(Tensor());
      mem.set_grad(Tensor());
      layer.zero_grad();
    }
    EXPECT_TRUE(all_close(outs[1], outs[0], 0.0, 0.0)) << core;
    ASSERT_EQ(grads[0].size(), grads[1].size());
    for (size_t i = 0; i < grads[0].size(); ++i) {
      ASSERT_TRUE(grads[1][i].defined()) << core << " gradient " << i;
      EXPECT_TRUE(all_close(grads[1][i], grads[0][i], 1e-13, 1e-12)) << core << " gradient " << i;
    }
  }
}

// What the feed-forward sublayer keeps (activation, none, chunked over 5 of the 12 rows: chunks of
// 5, 5, 2), alone and under the layer's checkpoint: the same maths in another order of work, so the
// same outputs and gradients. With dropout, chunks draw their masks in another order than the
// whole sublayer, so the chunked layer is compared with itself, with and without the layer's
// checkpoint: its masks replay in both recomputations.
TEST(TransformerLayer, FeedForwardCheckpointModesReproduceOutputsAndGradients) {
  const auto run = [](const std::string& mode, bool layer_ckpt, double dropout) {
    TransformerLayerConfig c = layer_config("sub_ln", "dilated");
    c.dropout = dropout;
    c.activation_dropout = dropout;
    c.ffn_checkpoint = mode;
    c.ffn_checkpoint_chunk = 5;
    c.checkpoint = layer_ckpt;
    Initializer init = f64_init(38);
    DecoderLayer layer(c, init, xpos(4));
    randomise(layer, 39);
    const Tensor x = leaf({2, 6, 8}, 40);
    manual_seed(78);
    const Tensor y = layer.forward(x).x;
    sum(mul(y, y)).backward();
    std::vector<Tensor> out{y, x.grad()};
    for (const Tensor& p : layer.parameters()) out.push_back(p.grad());
    return out;
  };
  const auto expect_same = [](const std::vector<Tensor>& got, const std::vector<Tensor>& want, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_TRUE(got[i].defined()) << what << " tensor " << i;
      EXPECT_TRUE(all_close(got[i], want[i], 1e-13, 1e-12)) << what << " tensor " << i;
    }
  };
  const std::vector<Tensor> base = run("activation", false, 0.0);
  for (const std::string mode : {"activation", "none", "chunked"}) {
    for (bool layer_ckpt : {false, true}) expect_same(run(mode, layer_ckpt, 0.0), base, mode);
  }
  expect_same(run("chunked", true, 0.3), run("chunked", false, 0.3), "chunked with dropout");
  TransformerLayerConfig bad = layer_config("sub_ln");
  bad.ffn_checkpoint = "all";
  Initializer init = f64_init(1);
  const std::string m = testing::error_message([&] { DecoderLayer layer(bad, init); });
  EXPECT_NE(m.find("unknown ffn_checkpoint 'all'; known: activation, none, chunked"), std::string::npos) << m;
}

TEST(TransformerLayer, AttendHookRunsTheLayerIncrementally) {
  // What a KV-cache decoder does through LayerContext::self_attend: feed rows one at a time at
  // their positions, keep keys and values, attend over them; the rows equal the full forward's.
  Initializer init = f64_init(42);
  DecoderLayer layer(layer_config("sub_ln"), init, xpos(4));
  randomise(layer, 43);
  const Tensor x = leaf({2, 6, 8}, 44);
  const Tensor full = layer.forward(x).x;
  Tensor keys, values;
  for (int64_t p = 0; p < 6; ++p) {
    LayerContext ctx;
    ctx.positions = p;
    ctx.self_attend = [&](const Tensor& q, const Tensor& k, const Tensor& v) {
      keys = keys.defined() ? cat({keys, k}, 1) : k;
      values = values.defined() ? cat({values, v}, 1) : v;
      AttentionParams params;
      params.causal = true;
      params.causal_offset = keys.size(1) - q.size(1);
      const AttentionOutput a = attention(q, keys, values, params);
      return AttentionResult{a.out, a.lse, Tensor()};
    };
    const Tensor row = layer.forward(x.narrow(1, p, 1), ctx).x;
    EXPECT_TRUE(all_close(row, full.narrow(1, p, 1), 1e-12, 1e-10)) << "position " << p;
  }
}

TEST(TransformerLayer, RejectsBadConfigsAndInputs) {
  Initializer init(1);
  EXPECT_NE(testing::error_message([&] { DecoderLayer(layer_config("post_ln"), init); }).find("unknown norm placement 'post_ln'"),
            std::string::npos);
  TransformerLayerConfig cross = layer_config("pre_ln");
  cross.cross_attention = true;
  EXPECT_NE(testing::error_message([&] { EncoderLayer(cross, init); }).find("decoder layers"), std::string::npos);
  DecoderLayer dec(cross, init);
  EXPECT_NE(testing::error_message([&] { dec.forward(zeros({1, 3, 8})); }).find("no encoder output"), std::string::npos);
  DecoderLayer plain(layer_config("pre_ln"), init);
  LayerContext ctx;
  ctx.memory = zeros({1, 2, 8});
  EXPECT_NE(testing::error_message([&] { plain.forward(zeros({1, 3, 8}), ctx); }).find("no cross-attention"),
            std::string::npos);
  TransformerLayerConfig swi = layer_config("pre_ln");
  swi.ffn_kind = "relu2";
  EXPECT_NE(testing::error_message([&] { DecoderLayer(swi, init); }).find("unknown kind 'relu2'"), std::string::npos);
}

}  // namespace
}  // namespace longnet
