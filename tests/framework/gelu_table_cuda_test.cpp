// The bf16 GELU norms take erf(h / sqrt(2)) and exp(-h^2 / 2) from a table instead of evaluating
// them: for every bf16 value, the GELU and its slope through the table must equal the evaluated
// ones bit for bit (the table covers magnitudes in [2^-12, 8) by symmetry; the rest evaluate).
#include <gtest/gtest.h>

#include "tests/support/gpu.h"

#ifdef LONGNET_WITH_CUDA

#include <cstdint>
#include <cstring>
#include <vector>

#include "framework/cuda/norm.h"
#include "framework/ops/factory.h"

namespace longnet {
namespace {

uint32_t bits_of(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

TEST(GeluTableCuda, EveryBf16ValueMatchesTheEvaluationBitForBit) {
  LN_REQUIRE_GPU();
  constexpr int64_t kValues = 65536;
  std::vector<float> in(kValues);
  for (int64_t b = 0; b < kValues; ++b) {
    const uint32_t u = static_cast<uint32_t>(b) << 16;
    std::memcpy(&in[static_cast<size_t>(b)], &u, sizeof(float));
  }
  const Device gpu = Device::cuda(0);
  const Tensor x = from_vector<float>(in, {kValues}, Device::cpu()).to(DType::BF16).to(gpu);
  const Tensor table = Tensor::empty({kValues, 2}, DType::F32, gpu);
  const Tensor evaluated = Tensor::empty({kValues, 2}, DType::F32, gpu);
  cuda::gelu_table_probe(0, static_cast<const uint16_t*>(x.raw_data()), kValues, static_cast<float*>(table.raw_data()),
                         static_cast<float*>(evaluated.raw_data()));
  const std::vector<float> a = table.to_vector<float>(), b = evaluated.to_vector<float>();
  int64_t differ = 0, first = -1;
  for (int64_t i = 0; i < 2 * kValues; ++i) {
    if (bits_of(a[static_cast<size_t>(i)]) != bits_of(b[static_cast<size_t>(i)])) {
      if (first < 0) first = i;
      ++differ;
    }
  }
  EXPECT_EQ(differ, 0) << "first at bf16 bits " << (first / 2) << (first % 2 ? " (slope)" : " (value)") << ": "
                       << a[static_cast<size_t>(first < 0 ? 0 : first)] << " vs "
                       << b[static_cast<size_t>(first < 0 ? 0 : first)];
  // A value inside the table's range is a GELU at all: gelu(1) = 0.8413447.
  EXPECT_NEAR(a[2 * 0x3f80], 0.8413447, 1e-6);
}

}  // namespace
}  // namespace longnet

#else

TEST(GeluTableCuda, RequiresTheCudaBackend) { LN_REQUIRE_GPU(); }

#endif
