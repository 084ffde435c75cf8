// Casts between float dtypes on the GPU: the vectorised path for contiguous, aligned tensors gives
// the same bits as the strided kernel, on sizes that leave tails after the vector accesses, on
// misaligned views (which take the strided kernel) and on special values (infinities, signed
// zeros, overflow to f16 infinity, values below f16's range); and it agrees with the CPU.
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/support/gpu.h"

namespace longnet {
namespace {

// n values over many magnitudes, the specials first.
std::vector<double> values(int64_t n) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> v = {inf, -inf, 0.0, -0.0, 65504.0, 7.0e4, -1.0e-30, 3.0e38, 1.5, -2.25};
  v.resize(static_cast<size_t>(n));
  for (size_t i = 10; i < v.size(); ++i) v[i] = std::sin(0.37 * i) * std::pow(10.0, static_cast<double>(i % 13) - 6.0);
  return v;
}

TEST(CastCuda, PackedPathEqualsTheStridedKernelAndTheCpu) {
  LN_REQUIRE_GPU();
  const std::vector<DType> dtypes = {DType::F32, DType::BF16, DType::F16, DType::F64};
  for (int64_t n : std::vector<int64_t>{1, 3, 4, 7, 8, 9, 1023, 4097, (int64_t(1) << 20) + 5}) {
    for (int64_t offset : {int64_t(0), int64_t(1)}) {
      for (DType from : dtypes) {
        const Tensor cpu_src = from_vector<double>(values(n), {n}, Device::cpu()).to(from);
        // Contiguous (offset 0: aligned) and every-other-element layouts of the same values.
        Tensor flat = Tensor::empty({n + offset}, from, Device::cuda(0)).narrow(0, offset, n);
        copy_(flat, cpu_src);
        Tensor strided = Tensor::empty({2 * n}, from, Device::cuda(0)).slice(0, 0, 2 * n, 2);
        copy_(strided, cpu_src);
        for (DType to : dtypes) {
          if (to == from) continue;
          const std::vector<double> got = cast(flat, to).to(Device::cpu()).to_vector<double>();
          const std::vector<double> want = cast(strided, to).to(Device::cpu()).to_vector<double>();
          const std::vector<double> cpu = cast(cpu_src, to).to_vector<double>();
          ASSERT_EQ(got.size(), static_cast<size_t>(n));
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_EQ(got[i], want[i]) << dtype_name(from) << " -> " << dtype_name(to) << " n " << n << " offset "
                                       << offset << " element " << i;
            // Within a 16-bit rounding (or an f16 subnormal step) of the CPU: the GPU rounds f64 to
            // 16 bits through f32.
            ASSERT_TRUE(got[i] == cpu[i] || std::abs(got[i] - cpu[i]) <= 1e-2 * std::abs(cpu[i]) + 6e-8)
                << dtype_name(from) << " -> " << dtype_name(to) << " vs cpu, element " << i << ": " << got[i]
                << " vs " << cpu[i];
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace longnet
