// Optimizers over parameter groups against naive double-precision loops written here (several
// steps, per-group lr scale and weight decay, parameters that miss a step), f32 master weights for
// bf16 parameters, state round trips (save after k steps, load into a fresh optimizer, continue:
// equal to the uninterrupted run), the weight-decay grouping helper, and error messages.
#include "optim/optimizer.h"

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/core/error.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"

namespace longnet::optim {
namespace {

// The gradient of parameter `i`, element `j`, at step `s` (deterministic, sign-changing).
double grad_value(int s, size_t i, size_t j) { return std::sin(0.7 * (s + 1) + 1.3 * j + i) * (1.0 + 0.1 * i); }

std::vector<double> initial_values(size_t i, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  for (size_t j = 0; j < v.size(); ++j) v[j] = std::cos(0.3 * j + 2.0 * i) * 0.5;
  return v;
}

Tensor make_param(size_t i, const Shape& shape, DType dtype, Device device = Device::cpu()) {
  Tensor t = from_vector<double>(initial_values(i, numel_of(shape)), shape, Device::cpu()).to(dtype).to(device);
  t.requires_grad_();
  return t;
}

void set_grads(const std::vector<Tensor>& params, int s, const std::vector<bool>& has_grad = {}) {
  for (size_t i = 0; i < params.size(); ++i) {
    if (!has_grad.empty() && !has_grad[i]) {
      params[i].set_grad(Tensor());
      continue;
    }
    std::vector<double> g(static_cast<size_t>(params[i].numel()));
    for (size_t j = 0; j < g.size(); ++j) g[j] = grad_value(s, i, j);
    const Tensor gt = from_vector<double>(g, params[i].shape(), Device::cpu()).to(params[i].dtype());
    params[i].set_grad(gt.to(params[i].device()));
  }
}

// Naive per-parameter state.
struct Ref {
  std::vector<double> p, m, v, buf;
  int64_t t = 0;
};

struct AdamHyper {
  double lr, wd, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  bool decoupled = true;
};

void adam_ref_step(Ref& r, const std::vector<double>& g_in, const AdamHyper& h) {
  if (r.m.empty()) r.m.assign(r.p.size(), 0.0), r.v.assign(r.p.size(), 0.0);
  ++r.t;
  for (size_t j = 0; j < r.p.size(); ++j) {
    double g = g_in[j];
    if (h.decoupled) {
      r.p[j] -= h.lr * h.wd * r.p[j];
    } else {
      g += h.wd * r.p[j];
    }
    r.m[j] = h.b1 * r.m[j] + (1 - h.b1) * g;
    r.v[j] = h.b2 * r.v[j] + (1 - h.b2) * g * g;
    const double mhat = r.m[j] / (1 - std::pow(h.b1, r.t));
    const double vhat = r.v[j] / (1 - std::pow(h.b2, r.t));
    r.p[j] -= h.lr * mhat / (std::sqrt(vhat) + h.eps);
  }
}

struct SgdHyper {
  double lr, wd, momentum, dampening = 0.0;
  bool nesterov = false;
};

void sgd_ref_step(Ref& r, const std::vector<double>& g_in, const SgdHyper& h) {
  for (size_t j = 0; j < r.p.size(); ++j) {
    double g = g_in[j] + h.wd * r.p[j];
    if (h.momentum != 0.0) {
      if (r.buf.size() != r.p.size()) r.buf.assign(r.p.size(), 0.0);
      r.buf[j] = r.t == 0 ? g : h.momentum * r.buf[j] + (1 - h.dampening) * g;
      g = h.nesterov ? g + h.momentum * r.buf[j] : r.buf[j];
    }
    r.p[j] -= h.lr * g;
  }
  ++r.t;
}

std::vector<double> ref_grad(int s, size_t i, size_t n) {
  std::vector<double> g(n);
  for (size_t j = 0; j < n; ++j) g[j] = grad_value(s, i, j);
  return g;
}

::testing::AssertionResult close(const std::vector<double>& got, const std::vector<double>& want, double rtol,
                                 double atol) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  for (size_t j = 0; j < got.size(); ++j) {
    if (!(std::abs(got[j] - want[j]) <= atol + rtol * std::abs(want[j]))) {
      return ::testing::AssertionFailure() << "element " << j << ": " << got[j] << " vs " << want[j];
    }
  }
  return ::testing::AssertionSuccess();
}

// Three parameters in two groups: {w (3, 4), b (4,)} with the base lr and decay 0.1, {e (5, 2)}
// at half the lr without decay.
struct Problem {
  std::vector<Tensor> params;
  std::vector<ParamGroup> groups;
  std::vector<double> lr_scale{1.0, 1.0, 0.5};
  std::vector<double> wd{0.1, 0.1, 0.0};

  explicit Problem(DType dtype, Device device = Device::cpu()) {
    params = {make_param(0, {3, 4}, dtype, device), make_param(1, {4}, dtype, device),
              make_param(2, {5, 2}, dtype, device)};
    ParamGroup a{{params[0], params[1]}, {"w", "b"}, 1.0, 0.1};
    ParamGroup b{{params[2]}, {"e"}, 0.5, 0.0};
    groups = {a, b};
  }
};

class AdamVsReference : public ::testing::TestWithParam<bool> {};

TEST_P(AdamVsReference, SeveralStepsTwoGroupsAndSkippedParameter) {
  const bool decoupled = GetParam();
  Problem s(DType::F64);
  Adam opt(s.groups, 0.01, AdamOptions{0.9, 0.99, 1e-8, decoupled});
  EXPECT_EQ(opt.name(), decoupled ? "adamw" : "adam");
  std::vector<Ref> ref(3);
  for (size_t i = 0; i < 3; ++i) ref[i].p = initial_values(i, s.params[i].numel());
  // Parameter 1 (b) has no gradient at step 1: it keeps its value and its own step count.
  for (int step = 0; step < 5; ++step) {
    const double lr = 0.01 * (1.0 + 0.2 * step);  // a schedule changes lr between steps
    opt.set_lr(lr);
    const std::vector<bool> has{true, step != 1, true};
    set_grads(s.params, step, has);
    opt.step();
    for (size_t i = 0; i < 3; ++i) {
      if (!has[i]) continue;
      adam_ref_step(ref[i], ref_grad(step, i, ref[i].p.size()), {lr * s.lr_scale[i], s.wd[i], 0.9, 0.99, 1e-8, decoupled});
    }
    for (size_t i = 0; i < 3; ++i) {
      ASSERT_TRUE(close(s.params[i].to_vector<double>(), ref[i].p, 1e-12, 1e-14)) << "step " << step << " param " << i;
    }
  }
  EXPECT_EQ(opt.step_count(), 5);
  EXPECT_EQ(opt.state_dict().scalars["param_updates"]["b"], 4);
}

INSTANTIATE_TEST_SUITE_P(Optim, AdamVsReference, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "AdamW" : "AdamL2"; });

TEST(Optim, AdamF32FollowsTheReference) {
  Problem s(DType::F32);
  Adam opt(s.groups, 0.05);
  std::vector<Ref> ref(3);
  for (size_t i = 0; i < 3; ++i) ref[i].p = initial_values(i, s.params[i].numel());
  for (int step = 0; step < 4; ++step) {
    set_grads(s.params, step);
    opt.step();
    for (size_t i = 0; i < 3; ++i) adam_ref_step(ref[i], ref_grad(step, i, ref[i].p.size()), {0.05 * s.lr_scale[i], s.wd[i]});
  }
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(close(s.params[i].to_vector<double>(), ref[i].p, 1e-5, 1e-6)) << i;
}

struct SgdCase {
  const char* name;
  double momentum, dampening;
  bool nesterov;
};

class SgdVsReference : public ::testing::TestWithParam<SgdCase> {};

TEST_P(SgdVsReference, SeveralSteps) {
  const SgdCase c = GetParam();
  Problem s(DType::F64);
  Sgd opt(s.groups, 0.1, SgdOptions{c.momentum, c.dampening, c.nesterov});
  std::vector<Ref> ref(3);
  for (size_t i = 0; i < 3; ++i) ref[i].p = initial_values(i, s.params[i].numel());
  for (int step = 0; step < 5; ++step) {
    set_grads(s.params, step);
    opt.step();
    for (size_t i = 0; i < 3; ++i) {
      sgd_ref_step(ref[i], ref_grad(step, i, ref[i].p.size()), {0.1 * s.lr_scale[i], s.wd[i], c.momentum, c.dampening, c.nesterov});
    }
  }
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(close(s.params[i].to_vector<double>(), ref[i].p, 1e-12, 1e-14)) << i;
  // Momentum keeps a buffer per parameter; plain SGD keeps none.
  EXPECT_EQ(opt.state_dict().tensors.size(), c.momentum != 0.0 ? 3u : 0u);
}

INSTANTIATE_TEST_SUITE_P(Optim, SgdVsReference,
                         ::testing::Values(SgdCase{"Plain", 0.0, 0.0, false}, SgdCase{"Momentum", 0.9, 0.0, false},
                                           SgdCase{"Dampened", 0.8, 0.3, false}, SgdCase{"Nesterov", 0.9, 0.0, true}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Optim, MasterWeightsKeepUpdatesSmallerThanBf16Resolution) {
  // bf16 has 8 significant bits: near 1.0 its spacing is 2^-7, far above lr = 1e-4 per step.
  Tensor p = from_vector<double>({1.0, -1.0, 0.5, 2.0}, {4}, Device::cpu()).to(DType::BF16);
  p.requires_grad_();
  Sgd opt({ParamGroup{{p}, {"p"}, 1.0, 0.0}}, 1e-4);
  const Tensor master = opt.master_weight("p");
  ASSERT_TRUE(master.defined());
  EXPECT_EQ(master.dtype(), DType::F32);
  std::vector<double> ref{1.0, -1.0, 0.5, 2.0};
  for (int step = 0; step < 100; ++step) {
    p.set_grad(from_vector<double>({1.0, -1.0, 1.0, 1.0}, {4}, Device::cpu()).to(DType::BF16));
    opt.step();
    ref[0] -= 1e-4, ref[1] += 1e-4, ref[2] -= 1e-4, ref[3] -= 1e-4;
  }
  EXPECT_TRUE(close(master.to_vector<double>(), ref, 1e-5, 1e-6));  // f32 rounding of 100 small steps
  // The model's tensor is the master rounded to bf16, exactly.
  EXPECT_EQ(p.dtype(), DType::BF16);
  EXPECT_EQ(p.to_vector<double>(), master.to(DType::BF16).to_vector<double>());
  // 0.01 of drift is visible in bf16 (pure bf16 SGD would have stayed at 1.0: 1e-4 < half an ulp).
  EXPECT_NE(p.to_vector<double>()[0], 1.0);
}

TEST(Optim, AdamMasterWeightsFollowTheF32Reference) {
  Problem s(DType::BF16);
  Adam opt(s.groups, 0.02);
  std::vector<Ref> ref(3);
  for (size_t i = 0; i < 3; ++i) {
    // The master starts from the bf16 value.
    ref[i].p = s.params[i].to_vector<double>();
  }
  for (int step = 0; step < 4; ++step) {
    set_grads(s.params, step);
    opt.step();
    for (size_t i = 0; i < 3; ++i) {
      // The reference sees the gradient as rounded to bf16.
      std::vector<double> g = from_vector<double>(ref_grad(step, i, ref[i].p.size()), {static_cast<int64_t>(ref[i].p.size())},
                                                  Device::cpu()).to(DType::BF16).to_vector<double>();
      adam_ref_step(ref[i], g, {0.02 * s.lr_scale[i], s.wd[i]});
    }
  }
  const std::vector<std::string> names{"w", "b", "e"};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(close(opt.master_weight(names[i]).to_vector<double>(), ref[i].p, 1e-5, 1e-6)) << names[i];
  }
  EXPECT_EQ(opt.state_dict().tensors.at("w.exp_avg").dtype(), DType::F32);
}

TEST(Optim, SixteenBitParametersNeedMasterWeights) {
  Tensor p = zeros({2}, DType::BF16);
  p.requires_grad_();
  try {
    Adam({ParamGroup{{p}, {"emb"}, 1.0, 0.0}}, 1e-3, {}, /*master_weights=*/false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("parameter 'emb' is bf16: enable master weights"), std::string::npos) << e.what();
  }
}

// Runs `total` steps, optionally interrupting after `cut`: the state goes through a copy (as a
// file would: tensors cloned, scalars through JSON text) into a fresh optimizer over fresh copies
// of the parameters. Returns the final parameters.
template <class Make>
std::vector<std::vector<double>> run(DType dtype, Make make, int total, int cut) {
  Problem s(dtype);
  std::unique_ptr<Optimizer> opt = make(s.groups);
  std::vector<Tensor> params = s.params;
  for (int step = 0; step < total; ++step) {
    if (step == cut) {
      OptimizerState saved = opt->state_dict();
      OptimizerState copy;
      for (const auto& [k, t] : saved.tensors) copy.tensors[k] = t.clone();
      copy.scalars = nlohmann::json::parse(saved.scalars.dump());
      Problem fresh(dtype);
      NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) copy_(fresh.params[i], params[i]);
      opt = make(fresh.groups);
      opt->load_state_dict(copy);
      EXPECT_EQ(opt->step_count(), cut);
      params = fresh.params;
    }
    opt->set_lr(0.03 / (1.0 + step));
    set_grads(params, step, {true, step % 3 != 0, true});
    opt->step();
  }
  std::vector<std::vector<double>> out;
  for (const Tensor& p : params) out.push_back(p.to_vector<double>());
  return out;
}

TEST(Optim, StateRoundTripContinuesExactly) {
  const std::vector<std::pair<std::string, std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>)>>> makers{
      {"adamw", [](std::vector<ParamGroup> g) { return std::make_unique<Adam>(std::move(g), 0.03); }},
      {"adam", [](std::vector<ParamGroup> g) { return std::make_unique<Adam>(std::move(g), 0.03, AdamOptions{0.8, 0.95, 1e-6, false}); }},
      {"sgd", [](std::vector<ParamGroup> g) { return std::make_unique<Sgd>(std::move(g), 0.03, SgdOptions{0.9, 0.0, true}); }},
  };
  for (const auto& [name, make] : makers) {
    for (DType dtype : {DType::F32, DType::BF16}) {
      const auto whole = run(dtype, make, 7, -1);
      for (int cut : {1, 4}) {
        EXPECT_EQ(run(dtype, make, 7, cut), whole) << name << " " << dtype_name(dtype) << " cut at " << cut;
      }
    }
  }
}

TEST(Optim, StateDictContents) {
  Problem s(DType::BF16);
  Adam opt(s.groups, 0.01);
  set_grads(s.params, 0, {true, false, true});
  opt.step();
  const OptimizerState st = opt.state_dict();
  // Master copies for all; moments only where an update happened.
  for (const char* key : {"w.master", "b.master", "e.master", "w.exp_avg", "w.exp_avg_sq", "e.exp_avg", "e.exp_avg_sq"}) {
    EXPECT_TRUE(st.tensors.count(key)) << key;
  }
  EXPECT_EQ(st.tensors.size(), 7u);
  EXPECT_EQ(st.scalars["optimizer"], "adamw");
  EXPECT_EQ(st.scalars["step"], 1);
  EXPECT_EQ(st.scalars["param_updates"]["b"], 0);
  EXPECT_DOUBLE_EQ(st.scalars["hyperparameters"]["beta2"].get<double>(), 0.999);
}

std::string load_error(Optimizer& opt, const OptimizerState& st) {
  try {
    opt.load_state_dict(st);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Optim, LoadStateDictRejectsMismatches) {
  Problem s(DType::F32);
  Adam saved_from(s.groups, 0.01);
  set_grads(s.params, 0);
  saved_from.step();
  const OptimizerState good = saved_from.state_dict();

  Problem t(DType::F32);
  Sgd sgd(t.groups, 0.1, SgdOptions{0.9});
  EXPECT_NE(load_error(sgd, good).find("state of a 'adamw' optimizer loaded into 'sgd'"), std::string::npos);

  Adam adam(t.groups, 0.01);
  OptimizerState bad_shape = good;
  bad_shape.tensors["w.exp_avg"] = zeros({4, 3});
  EXPECT_NE(load_error(adam, bad_shape).find("'w.exp_avg' is (4, 3) but the parameter is (3, 4)"), std::string::npos);

  OptimizerState missing = good;
  missing.tensors.erase("e.exp_avg_sq");
  EXPECT_NE(load_error(adam, missing).find("missing tensor 'e.exp_avg_sq'"), std::string::npos);

  OptimizerState extra = good;
  extra.tensors["ghost.exp_avg"] = zeros({1});
  EXPECT_NE(load_error(adam, extra).find("1 tensors in the state belong to no parameter"), std::string::npos);

  OptimizerState unknown = good;
  unknown.scalars["param_updates"]["ghost"] = 1;
  EXPECT_NE(load_error(adam, unknown).find("parameter 'ghost', which this optimizer does not hold"), std::string::npos);

  // A failed load leaves the optimizer as it was.
  EXPECT_EQ(adam.step_count(), 0);
  EXPECT_TRUE(adam.state_dict().tensors.empty());
  EXPECT_EQ(load_error(adam, good), "");
  EXPECT_EQ(adam.step_count(), 1);
}

TEST(Optim, ParamGroupsExcludeNormsBiasesEmbeddingsAndFrozen) {
  auto p = [](const Shape& shape, bool trainable = true) {
    Tensor t = zeros(shape);
    if (trainable) t.requires_grad_();
    return t;
  };
  const Tensor tied = p({10, 4});
  const std::vector<NamedParam> named{
      {"embed_tokens.weight", tied},
      {"layers.0.attn.q_proj.weight", p({4, 4})},
      {"layers.0.attn.q_proj.bias", p({4})},
      {"layers.0.ffn_layernorm.weight", p({4})},
      {"layers.0.frozen.weight", p({4, 4}, false)},
      {"output_projection.weight", tied},  // tied to the embedding: listed once
      {"layers.0.ffn.fc1.weight", p({8, 4})},
  };
  const std::vector<ParamGroup> groups = make_param_groups(named, 0.05);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].names, (std::vector<std::string>{"layers.0.attn.q_proj.weight", "layers.0.ffn.fc1.weight"}));
  EXPECT_DOUBLE_EQ(groups[0].weight_decay, 0.05);
  EXPECT_EQ(groups[1].names,
            (std::vector<std::string>{"embed_tokens.weight", "layers.0.attn.q_proj.bias", "layers.0.ffn_layernorm.weight"}));
  EXPECT_DOUBLE_EQ(groups[1].weight_decay, 0.0);
  // A custom predicate: only 1-D tensors excluded.
  const auto only_vectors = make_param_groups(named, 0.05, no_decay_by_name({}));
  EXPECT_EQ(only_vectors[0].names.size(), 3u);
  EXPECT_EQ(only_vectors[0].names[0], "embed_tokens.weight");
}

TEST(Optim, ConstructionErrors) {
  Tensor a = zeros({2});
  a.requires_grad_();
  auto error = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error([&] { Adam({ParamGroup{{a, a}, {"a", "b"}, 1.0, 0.0}}, 1e-3); }).find("same tensor as an earlier one"),
            std::string::npos);
  Tensor b = zeros({2});
  b.requires_grad_();
  EXPECT_NE(error([&] { Adam({ParamGroup{{a}, {"x"}, 1.0, 0.0}, ParamGroup{{b}, {"x"}, 1.0, 0.0}}, 1e-3); })
                .find("parameter name 'x' appears twice"),
            std::string::npos);
  EXPECT_NE(error([&] { Adam({ParamGroup{{a}, {}, 1.0, 0.0}}, 1e-3); }).find("has 1 parameters but 0 names"),
            std::string::npos);
  EXPECT_NE(error([&] { Adam({ParamGroup{{a}, {"a"}, 1.0, 0.0}}, 1e-3, AdamOptions{1.0}); }).find("betas must lie in [0, 1)"),
            std::string::npos);
  EXPECT_NE(error([&] { Sgd({ParamGroup{{a}, {"a"}, 1.0, 0.0}}, 1e-3, SgdOptions{0.0, 0.0, true}); })
                .find("nesterov momentum needs momentum > 0"),
            std::string::npos);
  Sgd ok({ParamGroup{{a}, {"a"}, 1.0, 0.0}}, 1e-3);
  EXPECT_NE(error([&] { ok.set_lr(-1.0); }).find("learning rate must be finite and >= 0"), std::string::npos);
  EXPECT_NE(error([&] { make_optimizer(OptimizerSpec{"lamb"}, {}); }).find("unknown optimizer 'lamb' (known: sgd, adam, adamw)"),
            std::string::npos);
}

TEST(Optim, ZeroGradAndFactory) {
  Problem s(DType::F32);
  OptimizerSpec spec;
  spec.name = "sgd";
  spec.lr = 0.5;
  spec.momentum = 0.9;
  std::unique_ptr<Optimizer> opt = make_optimizer(spec, s.groups);
  EXPECT_EQ(opt->name(), "sgd");
  EXPECT_DOUBLE_EQ(opt->lr(), 0.5);
  EXPECT_EQ(opt->parameters().size(), 3u);
  set_grads(s.params, 0);
  opt->zero_grad();
  for (const Tensor& p : s.params) EXPECT_FALSE(p.grad().defined());
  // Without gradients a step changes nothing.
  const std::vector<double> before = s.params[0].to_vector<double>();
  opt->step();
  EXPECT_EQ(s.params[0].to_vector<double>(), before);
}

TEST(OptimGpu, AdamMasterWeightsMatchTheCpu) {
  LN_REQUIRE_GPU();
  Problem cpu(DType::BF16);
  Problem gpu(DType::BF16, Device::cuda());
  Adam a(cpu.groups, 0.02), b(gpu.groups, 0.02);
  for (int step = 0; step < 4; ++step) {
    set_grads(cpu.params, step);
    set_grads(gpu.params, step);
    a.step();
    b.step();
  }
  for (const char* name : {"w", "b", "e"}) {
    EXPECT_TRUE(close(b.master_weight(name).to_vector<double>(), a.master_weight(name).to_vector<double>(), 1e-6, 1e-7))
        << name;
  }
  // One bf16 ulp at most, where the masters straddle a rounding boundary.
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(close(gpu.params[i].to_vector<double>(), cpu.params[i].to_vector<double>(), 8e-3, 1e-6)) << i;
}

TEST(OptimGpu, ManyParametersInBatchesFollowTheReference) {
  LN_REQUIRE_GPU();
  // More parameters than one batched launch takes, in two groups, with sizes that leave tails; one
  // misses the first step, so later steps update it in a batch of its own update count.
  constexpr size_t kParams = 100, kSkipper = 5;
  for (const bool adam : {true, false}) {
    std::vector<Tensor> params;
    std::vector<Ref> ref(kParams);
    ParamGroup decay, plain;
    decay.weight_decay = 0.1;
    plain.lr_scale = 0.5;
    for (size_t i = 0; i < kParams; ++i) {
      const Shape shape{static_cast<int64_t>(i % 7 + 1), static_cast<int64_t>(2 * i + 1)};
      params.push_back(make_param(i, shape, DType::F32, Device::cuda()));
      ref[i].p = initial_values(i, numel_of(shape));
      ParamGroup& g = i % 3 == 0 ? plain : decay;
      g.params.push_back(params.back());
      g.names.push_back("p" + std::to_string(i));
    }
    std::unique_ptr<Optimizer> opt;
    if (adam) {
      opt = std::make_unique<Adam>(std::vector<ParamGroup>{decay, plain}, 0.02);
    } else {
      opt = std::make_unique<Sgd>(std::vector<ParamGroup>{decay, plain}, 0.05, SgdOptions{0.9, 0.0, true});
    }
    for (int step = 0; step < 4; ++step) {
      std::vector<bool> has(kParams, true);
      has[kSkipper] = step != 0;
      set_grads(params, step, has);
      opt->step();
      for (size_t i = 0; i < kParams; ++i) {
        if (!has[i]) continue;
        const double scale = i % 3 == 0 ? 0.5 : 1.0, wd = i % 3 == 0 ? 0.0 : 0.1;
        const std::vector<double> g = ref_grad(step, i, ref[i].p.size());
        if (adam) {
          adam_ref_step(ref[i], g, {0.02 * scale, wd});
        } else {
          sgd_ref_step(ref[i], g, {0.05 * scale, wd, 0.9, 0.0, true});
        }
      }
    }
    for (size_t i = 0; i < kParams; ++i) {
      EXPECT_TRUE(close(params[i].to_vector<double>(), ref[i].p, 1e-5, 1e-6)) << (adam ? "adam " : "sgd ") << i;
    }
    EXPECT_EQ(opt->state_dict().scalars["param_updates"]["p5"], 3);
  }
}

}  // namespace
}  // namespace longnet::optim
