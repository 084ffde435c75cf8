// LongNetLM::loss computes its head and loss with linear_cross_entropy: the same loss and parameter
// gradients as the composite cross_entropy(forward(tokens), targets), tied and untied, f64 and f32.
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "models/longnet_lm.h"

namespace longnet {
namespace {

// Every parameter's gradient after backward from `loss`, by name; the gradients are then cleared.
std::vector<std::pair<std::string, std::vector<double>>> gradients(LongNetLM& model, const Tensor& loss) {
  loss.backward();
  std::vector<std::pair<std::string, std::vector<double>>> out;
  for (const auto& [name, p] : model.named_parameters()) out.emplace_back(name, p.grad().to_vector<double>());
  model.zero_grad();
  return out;
}

struct HeadCase {
  DType dtype;
  bool tied;
  double tol;  // relative, on the loss and each gradient element (f32 parameters hold the gradients)
};

TEST(LongNetLMHead, LossAndGradientsEqualTheComposite) {
  for (const HeadCase& hc : {HeadCase{DType::F64, true, 1e-6}, HeadCase{DType::F64, false, 1e-6},
                             HeadCase{DType::F32, true, 1e-5}, HeadCase{DType::F32, false, 1e-5}}) {
    SCOPED_TRACE(std::string(dtype_name(hc.dtype)) + (hc.tied ? " tied" : " untied"));
    ModelConfig c = model_preset("tiny");
    c.compute_dtype = hc.dtype;
    c.tie_weights = hc.tied;
    LongNetLM model(c);
    Generator g(61);
    const Tensor tokens = randint(0, c.vocab_size, {2, 12}, DType::I64, Device::cpu(), &g);
    std::vector<int64_t> t = randint(0, c.vocab_size, {2, 12}, DType::I64, Device::cpu(), &g).to_vector<int64_t>();
    t[0] = t[13] = t[23] = c.ignore_index;
    const Tensor targets = from_vector(t, {2, 12});

    const Tensor got = model.loss(tokens, targets).loss;
    EXPECT_EQ(got.dtype(), hc.dtype == DType::F64 ? DType::F64 : DType::F32);
    const double got_loss = got.item();
    const auto got_grads = gradients(model, got);
    const Tensor want = cross_entropy(model.forward(tokens), targets, c.ignore_index);
    const double want_loss = want.item();
    const auto want_grads = gradients(model, want);

    EXPECT_NEAR(got_loss, want_loss, hc.tol * std::abs(want_loss));
    ASSERT_EQ(got_grads.size(), want_grads.size());
    for (size_t i = 0; i < want_grads.size(); ++i) {
      const auto& [name, w] = want_grads[i];
      ASSERT_EQ(got_grads[i].first, name);
      double scale = 0.0;
      for (double v : w) scale = std::max(scale, std::abs(v));
      ASSERT_GT(scale, 0.0) << name;
      for (size_t j = 0; j < w.size(); ++j) {
        ASSERT_NEAR(got_grads[i].second[j], w[j], hc.tol * scale) << name << "[" << j << "]";
      }
    }
  }
}

}  // namespace
}  // namespace longnet
