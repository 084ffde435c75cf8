// The LongNet LM on a GPU (bf16 activations, which the GPU attention kernels take): loss and
// gradients track the CPU's f32 ones for the same weights, with every core, and a tiny model
// overfits one batch. Skipped without a GPU.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "models/longnet_lm.h"
#include "tests/models/tiny_training.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::relative_error;

// Small, with a head dim the GPU kernels take; f32 activations (for the CPU reference).
ModelConfig gpu_tiny(const std::string& attention) {
  ModelConfig c = model_preset("tiny");
  c.dim = 64;
  c.heads = 2;
  c.ffn_dim = 128;
  c.attention = attention;
  c.attention_config.block_size = 16;
  c.attention_config.sparsity = 0.5;
  c.attention_config.segment_lengths = {16, 32};
  c.attention_config.dilation_rates = {1, 2};
  return c;
}

Tensor tokens_of(int64_t b, int64_t n, int64_t vocab, uint64_t seed, Device device) {
  Generator g(seed);
  return randint(0, vocab, {b, n}, DType::I64, Device::cpu(), &g).to(device);
}

struct LossAndGrads {
  double loss;
  std::vector<Tensor> grads;  // on the CPU
};

LossAndGrads run(LongNetLM& model, const Tensor& tokens, const Tensor& targets) {
  model.zero_grad();
  const Tensor loss = model.loss(tokens, targets).loss;
  loss.backward();
  LossAndGrads r{loss.item(), {}};
  for (const Tensor& p : model.parameters()) r.grads.push_back(p.grad().to(DType::F32).to(Device::cpu()));
  return r;
}

class CudaLongNetLM : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaLongNetLM, Bf16LossAndGradientsTrackTheCpu) {
  LN_REQUIRE_GPU();
  const ModelConfig c = gpu_tiny(GetParam());
  LongNetLM cpu_model(c);
  ModelConfig half = c;
  half.compute_dtype = DType::BF16;
  std::unique_ptr<LongNetLM> gpu_model;
  {
    DefaultDeviceGuard guard(Device::cuda());
    gpu_model = std::make_unique<LongNetLM>(half, false);
  }
  gpu_model->load_state_dict(cpu_model.state_dict());
  const Tensor tokens = tokens_of(2, 64, c.vocab_size, 1, Device::cpu()), targets = tokens_of(2, 64, c.vocab_size, 2, Device::cpu());
  const LossAndGrads want = run(cpu_model, tokens, targets);
  const LossAndGrads got = run(*gpu_model, tokens.to(Device::cuda()), targets.to(Device::cuda()));
  EXPECT_NEAR(got.loss, want.loss, 0.01 * want.loss) << GetParam();
  const auto names = cpu_model.named_parameters();
  for (size_t i = 0; i < want.grads.size(); ++i) {
    EXPECT_LT(relative_error(got.grads[i], want.grads[i]), 0.05) << GetParam() << " " << names[i].first;
  }
}

INSTANTIATE_TEST_SUITE_P(Cores, CudaLongNetLM, ::testing::Values("dense", "dilated", "block_sparse", "adaptive"));

TEST(CudaLongNetLMTraining, TinyModelOverfitsOneBatchInBf16) {
  LN_REQUIRE_GPU();
  DefaultDeviceGuard guard(Device::cuda());
  ModelConfig c = gpu_tiny("dilated");
  c.compute_dtype = DType::BF16;
  LongNetLM model(c);
  const Tensor tokens = tokens_of(2, 32, c.vocab_size, 3, Device::cuda());
  const Tensor targets = tokens_of(2, 32, c.vocab_size, 4, Device::cuda());
  const auto losses = testing::train_adamw(model, [&] { return model.loss(tokens, targets).loss; }, 150, 1e-2);
  EXPECT_GT(losses.front(), 3.5);
  EXPECT_LT(losses.back(), 0.1) << "loss after " << losses.size() << " steps";
}

}  // namespace
}  // namespace longnet
