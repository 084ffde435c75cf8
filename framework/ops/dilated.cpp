#include "framework/ops/dilated.h"

#include "framework/core/error.h"
#include "framework/core/profiler.h"
#include "framework/ops/factory.h"

#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/dilated.h"
#endif

namespace longnet {
namespace {

void require_cuda(const Tensor& t, const char* what) {
  LN_CHECK(t.defined() && t.device().is_cuda() && t.is_contiguous(), "[dilated] the gathered path takes contiguous ",
           "CUDA tensors; ", what, " is not");
#ifndef LONGNET_WITH_CUDA
  LN_FAIL("[dilated] this build has no CUDA backend");
#endif
}

void check_branch(const DilatedBranch& b, int64_t n) {
  LN_CHECK(b.segment > 0 && b.rate > 0 && n % b.segment == 0, "[dilated] the gathered path needs N a multiple of ",
           "the segment length, got N = ", n, " and w = ", b.segment);
}

#ifdef LONGNET_WITH_CUDA
cuda::DilatedShape shape_of(int64_t batch, int64_t n, int64_t heads, int64_t head_dim) {
  return {batch, n, heads, head_dim};
}

std::vector<cuda::DilatedPart> parts_of(const std::vector<Tensor>& rows, const std::vector<Tensor>& lse,
                                        const std::vector<DilatedBranch>& branches, int64_t n) {
  LN_CHECK(rows.size() == branches.size(), "[dilated] ", rows.size(), " parts for ", branches.size(), " branches");
  std::vector<cuda::DilatedPart> parts;
  for (size_t i = 0; i < rows.size(); ++i) {
    require_cuda(rows[i], "a part");
    check_branch(branches[i], n);
    parts.push_back({rows[i].raw_data(), lse.empty() ? nullptr : static_cast<const float*>(lse[i].raw_data()),
                     branches[i].segment, branches[i].rate, branches[i].length()});
  }
  return parts;
}
#endif

}  // namespace

Tensor dilated_gather(const Tensor& x, const DilatedBranch& branch) {
  const ProfileScope scope("dilated_gather");
  require_cuda(x, "x");
  const int64_t b = x.size(0), n = x.size(1), h = x.size(2), d = x.size(3);
  check_branch(branch, n);
  // Without dilation the gathered layout is the sequence layout: a view saves a copy.
  if (branch.rate == 1) return x.view({b * (n / branch.segment), branch.segment, h, d});
  Tensor out = Tensor::empty({b * (n / branch.segment), branch.length(), h, d}, x.dtype(), x.device());
#ifdef LONGNET_WITH_CUDA
  cuda::dilated_gather(x.device().index, x.dtype(), shape_of(b, n, h, d), branch.segment, branch.rate, x.raw_data(),
                       out.raw_data());
#endif
  return out;
}

Tensor dilated_gather_stats(const Tensor& lse, const DilatedBranch& branch) {
  require_cuda(lse, "lse");
  LN_CHECK(lse.dtype() == DType::F32, "[dilated] lse must be f32");
  const int64_t b = lse.size(0), h = lse.size(1), n = lse.size(2);
  check_branch(branch, n);
  if (branch.rate == 1 && branch.segment == n) return lse;
  Tensor out = Tensor::empty({b * (n / branch.segment), h, branch.length()}, DType::F32, lse.device());
#ifdef LONGNET_WITH_CUDA
  cuda::dilated_gather_stats(lse.device().index, shape_of(b, n, h, 0), branch.segment, branch.rate,
                             static_cast<const float*>(lse.raw_data()), static_cast<float*>(out.raw_data()));
#endif
  return out;
}

AttentionOutput dilated_merge(const std::vector<AttentionOutput>& parts, const std::vector<DilatedBranch>& branches,
                              int64_t batch, int64_t n) {
  const ProfileScope scope("dilated_merge");
  LN_CHECK(!parts.empty(), "[dilated] nothing to merge");
  const Tensor& first = parts[0].out;
  require_cuda(first, "a part");
  const int64_t h = first.size(2), d = first.size(3);
  AttentionOutput r{Tensor::empty({batch, n, h, d}, first.dtype(), first.device()),
                    Tensor::empty({batch, h, n}, DType::F32, first.device())};
#ifdef LONGNET_WITH_CUDA
  std::vector<Tensor> rows, lse;
  for (const AttentionOutput& p : parts) {
    rows.push_back(p.out);
    lse.push_back(p.lse);
  }
  const std::vector<cuda::DilatedPart> cp = parts_of(rows, lse, branches, n);
  cuda::dilated_merge(first.device().index, first.dtype(), shape_of(batch, n, h, d), cp.data(),
                      static_cast<int>(cp.size()), r.out.raw_data(), static_cast<float*>(r.lse.raw_data()));
#endif
  return r;
}

Tensor dilated_sum(const std::vector<Tensor>& parts, const std::vector<DilatedBranch>& branches, int64_t batch,
                   int64_t n) {
  const ProfileScope scope("dilated_sum");
  LN_CHECK(!parts.empty(), "[dilated] nothing to sum");
  const Tensor& first = parts[0];
  require_cuda(first, "a part");
  Tensor out = Tensor::empty({batch, n, first.size(2), first.size(3)}, first.dtype(), first.device());
#ifdef LONGNET_WITH_CUDA
  const std::vector<cuda::DilatedPart> cp = parts_of(parts, {}, branches, n);
  cuda::dilated_sum(first.device().index, first.dtype(), shape_of(batch, n, first.size(2), first.size(3)), cp.data(),
                    static_cast<int>(cp.size()), out.raw_data());
#endif
  return out;
}

}  // namespace longnet
