// copy_many_: every pair copied as copy_ would, on the CPU and on the GPU, where the contiguous
// same-dtype pairs share launches: sizes with tails after the 16-byte words, more pairs than one
// launch carries, empty and misaligned views (which go on their own), dtype conversions (through
// copy_), a source that is its own destination; and bad pairs rejected.
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

struct Pairs {
  std::vector<Tensor> dsts, srcs;
};

// 70 pairs on `device`: f32, bf16 and f64 of sizes from 0 to past a block, the 7th a misaligned
// view, every 10th a bf16 -> f32 conversion, the last copied onto itself.
Pairs make_pairs(Device device) {
  const std::vector<int64_t> sizes = {0, 1, 3, 4, 5, 17, 255, 1024, 4097, (int64_t(1) << 15) + 3};
  const std::vector<DType> dtypes = {DType::F32, DType::BF16, DType::F64};
  Pairs p;
  for (int i = 0; i < 70; ++i) {
    const int64_t n = sizes[static_cast<size_t>(i) % sizes.size()];
    const DType dt = dtypes[static_cast<size_t>(i) % dtypes.size()];
    const DType src_dt = i % 10 == 9 ? DType::BF16 : dt;
    const Tensor src = (arange(0.0, static_cast<double>(n), 1.0, DType::F64) * (0.5 + i)).to(src_dt).to(device);
    Tensor dst = i == 6 ? Tensor::empty({n + 1}, dt, device).narrow(0, 1, n) : Tensor::empty({n}, dt, device);
    fill_(dst, -1.0);
    p.dsts.push_back(dst);
    p.srcs.push_back(i == 69 ? dst : src);
  }
  return p;
}

void expect_copied(const Pairs& p) {
  for (size_t i = 0; i < p.dsts.size(); ++i) {
    const Tensor expected = i == 69 ? full(p.dsts[i].shape(), -1.0, DType::F64, Device::cpu())
                                    : p.srcs[i].to(Device::cpu()).to(DType::F64);
    EXPECT_EQ(p.dsts[i].to(Device::cpu()).to(DType::F64).to_vector<double>(), expected.to_vector<double>())
        << "pair " << i;
  }
}

TEST(CopyMany, CopiesEveryPairOnTheCpu) {
  const Pairs p = make_pairs(Device::cpu());
  copy_many_(p.dsts, p.srcs);
  expect_copied(p);
}

TEST(CopyMany, CopiesEveryPairOnTheGpuInSharedLaunches) {
  LN_REQUIRE_GPU();
  const Pairs p = make_pairs(Device::cuda(0));
  copy_many_(p.dsts, p.srcs);
  expect_copied(p);
}

TEST(CopyMany, RejectsMismatchedPairs) {
  const std::vector<Tensor> two = {zeros({2}), zeros({3})};
  const std::vector<Tensor> one = {zeros({2})};
  EXPECT_NE(testing::error_message([&] { copy_many_(two, one); }).find("2 destinations for 1 sources"),
            std::string::npos);
  const std::vector<Tensor> swapped = {zeros({3}), zeros({2})};
  EXPECT_NE(testing::error_message([&] { copy_many_(two, swapped); }).find("pair 0: destination (2)"),
            std::string::npos);
  const std::vector<Tensor> undefined = {Tensor(), zeros({3})};
  EXPECT_NE(testing::error_message([&] { copy_many_(undefined, two); }).find("undefined"), std::string::npos);
}

}  // namespace
}  // namespace longnet
