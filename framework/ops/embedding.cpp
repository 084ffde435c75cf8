#include "framework/ops/embedding.h"

#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/embedding.h"
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/index.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/embedding.h"
#endif

namespace longnet {
namespace {

class EmbeddingBackward final : public autograd::Node {
 public:
  EmbeddingBackward(Tensor ids, int64_t vocab, DType dtype)
      : ids_(std::move(ids)), vocab_(vocab), dtype_(dtype) {}
  std::string name() const override { return "EmbeddingBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    const Device dev = g[0].device();
    // CPU kernels sum 16-bit gradients in f32 after an upcast; the GPU kernel reads them as they
    // are and accumulates in f32 itself.
    const Tensor go = ops::kernel_input(g[0]).contiguous();
    const int64_t dim = go.size(-1);
    Tensor gw = Tensor::empty({vocab_, dim}, go.dtype(), dev);
    const cpu::EmbeddingBackwardParams p{gw.raw_data(), go.raw_data(), go.dtype(),  ids_.raw_data(),
                                         ids_.dtype(),  ids_.numel(),  vocab_,      dim};
    if (dev.is_cuda()) {
#ifdef LONGNET_WITH_CUDA
      cuda::embedding_backward(dev.index, p);
#endif
    } else {
      cpu::embedding_backward(p);
    }
    return {cast(gw, dtype_)};
  }
  std::vector<Tensor> saved_tensors() const override { return {ids_}; }
  void release_saved() override { ids_ = Tensor(); }

 private:
  Tensor ids_;  // contiguous, all in range
  int64_t vocab_;
  DType dtype_;
};

}  // namespace

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  const ProfileScope scope("embedding");
  const Device dev = ops::common_device("embedding", {weight, indices});
  ops::require_float("embedding", weight);
  LN_CHECK(weight.dim() == 2, "[embedding] weight must be (V, D), got ", shape_str(weight.shape()));
  LN_CHECK(indices.dtype() == DType::I32 || indices.dtype() == DType::I64,
           "[embedding] indices must be i32 or i64, got ", dtype_name(indices.dtype()), " of shape ",
           shape_str(indices.shape()));
  const int64_t vocab = weight.size(0), dim = weight.size(1);
  const Tensor ids = indices.contiguous();
  // On a GPU this waits for the device: the range check comes back with one small copy.
  const std::optional<int64_t> bad = ops::first_out_of_range(ids, vocab);
  LN_CHECK(!bad, "[embedding] id ", bad.value_or(0), " out of range for V = ", vocab, " (weight ",
           shape_str(weight.shape()), ", indices ", shape_str(indices.shape()), ")");
  Shape shape = indices.shape();
  shape.push_back(dim);
  Tensor out = Tensor::empty(shape, weight.dtype(), dev);
  const cpu::EmbeddingParams p{weight.raw_data(), weight.stride(0), weight.stride(1), ids.raw_data(),
                               ids.dtype(),       out.raw_data(),   out.dtype(),      ids.numel(),
                               dim};
  if (dev.is_cuda()) {
#ifdef LONGNET_WITH_CUDA
    cuda::embedding(dev.index, p);
#endif
  } else {
    cpu::embedding(p);
  }
  if (autograd::needs_grad({weight})) {
    autograd::record(std::make_shared<EmbeddingBackward>(ids.detach(), vocab, weight.dtype()), {weight},
                     {out});
  }
  return out;
}

}  // namespace longnet
