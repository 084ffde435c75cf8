// Decoding on the GPU in bf16: every core's chunked and step-by-step decode against the same core's
// causal forward on the GPU, and against the CPU decode in f32 from the same bf16-rounded values.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "layers/attention/core.h"
#include "layers/attention/decode.h"
#include "tests/layers/block_patterns.h"
#include "tests/support/gradcheck.h"
#include "tests/support/gpu.h"

namespace longnet {
namespace {

using testing::relative_error;

// ||a - b|| / ||b|| over a chunk: bf16 rounding of operands and the cache (8 bits of mantissa)
// stays well below it; a missing or extra key block does not.
constexpr double kMaxRelError = 2e-2;
// lse is f32 from bf16 scores: absolute error of a few bf16 ulps of the largest score.
constexpr double kLseTolerance = 5e-2;

double max_abs_error(const Tensor& a, const Tensor& b) {
  const auto x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isinf(y[i]) && x[i] == y[i]) continue;
    m = std::max(m, std::abs(x[i] - y[i]));
  }
  return m;
}

struct CoreCase {
  std::string name;
  AttentionConfig config;
};

std::vector<CoreCase> cases() {
  AttentionConfig dilated;
  dilated.segment_lengths = {64, 128, 256};
  dilated.dilation_rates = {1, 2, 4};
  AttentionConfig local;
  local.block_size = 64;
  local.pattern = testing::test_pattern("local", 1);
  AttentionConfig random = local;
  random.pattern = testing::test_pattern("random");
  AttentionConfig adaptive;
  adaptive.block_size = 32;
  adaptive.sparsity = 0.6;
  adaptive.head_dim = 64;
  return {{"dense", {}}, {"dilated", dilated}, {"block_sparse", local}, {"block_sparse", random}, {"adaptive", adaptive}};
}

TEST(CudaDecode, EveryCoreMatchesItsForwardInBf16) {
  LN_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  DefaultDeviceGuard on_gpu(gpu);
  NoGradGuard no_grad;
  const int64_t b = 2, n = 300, h = 4, d = 64;
  Generator g(3);
  std::vector<Tensor> qkv;
  for (int i = 0; i < 3; ++i) qkv.push_back(cast(randn({b, n, h, d}, DType::F32, Device::cpu(), &g), DType::BF16));
  for (const CoreCase& c : cases()) {
    SCOPED_TRACE(c.name);
    auto core = make_attention_core(c.name, c.config);
    const Tensor q = qkv[0].to(gpu), k = qkv[1].to(gpu), v = qkv[2].to(gpu);
    AttentionOptions causal;
    causal.causal = true;
    const AttentionResult full = core->forward(q, k, v, causal);
    // A prefill crossing segment and block boundaries, then single steps; and the same rows on
    // the CPU in f32 (its own forward is checked exactly in decode_test.cpp).
    KvCache cache(n), host_cache(n);
    auto host_core = [&] {
      DefaultDeviceGuard on_cpu(Device::cpu());
      return make_attention_core(c.name, c.config);
    }();
    std::vector<int64_t> chunks{77, 1, 1, 50};
    for (int64_t at = 77 + 1 + 1 + 50; at < n; ++at) chunks.push_back(1);
    int64_t at = 0;
    for (int64_t m : chunks) {
      const AttentionResult r = core->decode(q.narrow(1, at, m), k.narrow(1, at, m), v.narrow(1, at, m), cache);
      EXPECT_EQ(r.out.dtype(), DType::BF16);
      EXPECT_LT(relative_error(r.out, full.out.narrow(1, at, m)), kMaxRelError) << "rows " << at << "+" << m;
      EXPECT_LT(max_abs_error(r.lse, full.lse.narrow(2, at, m)), kLseTolerance) << "rows " << at << "+" << m;
      const AttentionResult hr = host_core->decode(cast(qkv[0].narrow(1, at, m), DType::F32),
                                                   cast(qkv[1].narrow(1, at, m), DType::F32),
                                                   cast(qkv[2].narrow(1, at, m), DType::F32), host_cache);
      EXPECT_LT(relative_error(r.out, hr.out), kMaxRelError) << "rows " << at << "+" << m << " vs CPU";
      at += m;
    }
  }
}

TEST(CudaDecode, DenseStepsOverLongCachesMatchTheForward) {
  // Single-row steps over 4K+ cached keys take the split-key path (splits merged by LSE).
  LN_REQUIRE_GPU();
  const Device gpu = Device::cuda(0);
  DefaultDeviceGuard on_gpu(gpu);
  NoGradGuard no_grad;
  const int64_t n = 4500, prefill = 4490;
  Generator g(4);
  std::vector<Tensor> qkv;
  for (int i = 0; i < 3; ++i) qkv.push_back(cast(randn({2, n, 4, 64}, DType::F32, Device::cpu(), &g), DType::BF16).to(gpu));
  auto core = make_attention_core("dense");
  AttentionOptions causal;
  causal.causal = true;
  const AttentionResult full = core->forward(qkv[0], qkv[1], qkv[2], causal);
  KvCache cache(n);
  core->decode(qkv[0].narrow(1, 0, prefill), qkv[1].narrow(1, 0, prefill), qkv[2].narrow(1, 0, prefill), cache);
  for (int64_t at = prefill; at < n; ++at) {
    const AttentionResult r =
        core->decode(qkv[0].narrow(1, at, 1), qkv[1].narrow(1, at, 1), qkv[2].narrow(1, at, 1), cache);
    EXPECT_LT(relative_error(r.out, full.out.narrow(1, at, 1)), kMaxRelError) << "row " << at;
    EXPECT_LT(max_abs_error(r.lse, full.lse.narrow(2, at, 1)), kLseTolerance) << "row " << at;
  }
}

}  // namespace
}  // namespace longnet
