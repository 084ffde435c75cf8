#include "framework/ops/cast_many.h"

#include <cstdint>
#include <map>
#include <utility>

#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/ops/copy.h"
#include "framework/ops/device_copy.h"

namespace longnet {
namespace {

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Fills `outs[i]` (fresh tensors in `dtype`) with `srcs[i]` converted, for every i: the pairs a
// batched GPU launch can take grouped by (device, source dtype), every other pair through copy_
// (the CPU's loop, views, misaligned data, integer types).
void convert_many(std::span<const Tensor> outs, std::span<const Tensor> srcs, DType dtype) {
  std::map<std::pair<int, DType>, std::vector<ops::FlatCast>> batches;
  for (size_t i = 0; i < outs.size(); ++i) {
    const Tensor& out = outs[i];
    const Tensor& src = srcs[i];
    if (out.numel() == 0) continue;
    const bool batched = src.device().is_cuda() && is_floating(src.dtype()) && is_floating(out.dtype()) &&
                         src.is_contiguous() && aligned16(src.raw_data()) && aligned16(out.raw_data());
    if (batched) {
      batches[{src.device().index, src.dtype()}].push_back({out.raw_data(), src.raw_data(), src.numel()});
    } else {
      copy_(out, src);
    }
  }
  for (const auto& [key, casts] : batches) ops::device_cast_many(key.first, dtype, key.second, casts);
}

// One node for a cast_many: input i's gradient is output i's, converted back to input i's dtype
// (by cast_many again, one batched launch per source dtype on a GPU).
class CastManyBackward final : public autograd::Node {
 public:
  explicit CastManyBackward(std::vector<DType> from) : from_(std::move(from)) {}
  std::string name() const override { return "CastManyBackward"; }
  bool zero_fills_missing_grads() const override { return false; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    std::vector<Tensor> out(g.size());
    std::map<DType, std::vector<size_t>> by_dtype;
    for (size_t i = 0; i < g.size(); ++i) {
      if (g[i].defined()) by_dtype[from_[i]].push_back(i);
    }
    for (const auto& [dtype, members] : by_dtype) {
      std::vector<Tensor> grads;
      for (size_t i : members) grads.push_back(g[i]);
      const std::vector<Tensor> converted = cast_many(grads, dtype);
      for (size_t k = 0; k < members.size(); ++k) out[members[k]] = converted[k];
    }
    return out;
  }

 private:
  std::vector<DType> from_;
};

}  // namespace

std::vector<Tensor> cast_many(std::span<const Tensor> tensors, DType dtype) {
  const ProfileScope scope("cast_many");
  std::vector<Tensor> result(tensors.begin(), tensors.end());
  std::vector<Tensor> srcs, outs;
  std::vector<size_t> where;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    if (!t.defined() || t.dtype() == dtype) continue;
    srcs.push_back(t);
    outs.push_back(Tensor::empty(t.shape(), dtype, t.device()));
    where.push_back(i);
  }
  convert_many(outs, srcs, dtype);
  // Recorded as cast records: float to float, for the inputs that need a gradient.
  std::vector<Tensor> graph_in, graph_out;
  std::vector<DType> from;
  for (size_t k = 0; k < srcs.size(); ++k) {
    result[where[k]] = outs[k];
    if (is_floating(srcs[k].dtype()) && is_floating(dtype) && autograd::needs_grad({srcs[k]})) {
      graph_in.push_back(srcs[k]);
      graph_out.push_back(outs[k]);
      from.push_back(srcs[k].dtype());
    }
  }
  if (!graph_in.empty()) autograd::record(std::make_shared<CastManyBackward>(std::move(from)), graph_in, graph_out);
  return result;
}

}  // namespace longnet
