#include "framework/ops/copy.h"

#include <vector>

#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/copy.h"
#include "framework/ops/common.h"
#include "framework/ops/device_copy.h"

namespace longnet {
namespace {

// dst = convert(src), src already known to broadcast to dst's shape.
void convert_into(const Tensor& dst, const Tensor& src) {
  if (dst.device().is_cpu() && src.device().is_cpu()) {
    const Strides ss = ops::broadcast_strides(src, dst.shape());
    cpu::copy(dst.shape(), {dst.raw_data(), dst.dtype(), dst.strides().data()},
              {src.raw_data(), src.dtype(), ss.data()});
    return;
  }
  ops::device_copy(dst, src);
}

}  // namespace

void copy_(const Tensor& dst, const Tensor& src) {
  const ProfileScope scope("copy");
  LN_CHECK(dst.defined() && src.defined(), "[copy_] undefined tensor");
  const Shape& shape = dst.shape();
  LN_CHECK(src.dim() <= dst.dim() && broadcast_shapes(src.shape(), shape, "copy_") == shape,
           "[copy_] cannot broadcast source ", shape_str(src.shape()), " to destination ",
           shape_str(shape));
  convert_into(dst, src);
}

void copy_many_(std::span<const Tensor> dsts, std::span<const Tensor> srcs) {
  const ProfileScope scope("copy_many");
  LN_CHECK(dsts.size() == srcs.size(), "[copy_many_] ", dsts.size(), " destinations for ", srcs.size(), " sources");
  std::vector<ops::FlatCopy> flat;
  int gpu = -1;
  for (size_t i = 0; i < dsts.size(); ++i) {
    const Tensor& dst = dsts[i];
    const Tensor& src = srcs[i];
    LN_CHECK(dst.defined() && src.defined(), "[copy_many_] pair ", i, " has an undefined tensor");
    LN_CHECK(dst.shape() == src.shape(), "[copy_many_] pair ", i, ": destination ", shape_str(dst.shape()),
             " and source ", shape_str(src.shape()), " differ in shape");
    const bool flat_pair = dst.device().is_cuda() && dst.device() == src.device() && dst.dtype() == src.dtype() &&
                           dst.is_contiguous() && src.is_contiguous() && (gpu < 0 || gpu == dst.device().index);
    if (!flat_pair) {
      copy_(dst, src);
      continue;
    }
    gpu = dst.device().index;
    if (dst.raw_data() != src.raw_data()) {
      flat.push_back({dst.raw_data(), src.raw_data(), static_cast<size_t>(dst.numel()) * dtype_size(dst.dtype())});
    }
  }
  if (!flat.empty()) ops::device_copy_many(gpu, flat);
}

void fill_(const Tensor& dst, double value) {
  if (dst.device().is_cpu()) {
    cpu::fill(dst.shape(), {dst.raw_data(), dst.dtype(), dst.strides().data()}, value);
    return;
  }
  ops::device_fill(dst, value);
}

namespace {

class CastBackward final : public autograd::Node {
 public:
  explicit CastBackward(DType from) : from_(from) {}
  std::string name() const override { return "CastBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {cast(g[0], from_)}; }

 private:
  DType from_;
};

class ToDeviceBackward final : public autograd::Node {
 public:
  explicit ToDeviceBackward(Device from) : from_(from) {}
  std::string name() const override { return "ToDeviceBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override { return {to_device(g[0], from_)}; }

 private:
  Device from_;
};

}  // namespace

Tensor cast(const Tensor& t, DType dtype) {
  if (t.dtype() == dtype) return t;
  const ProfileScope scope("cast");
  Tensor out = Tensor::empty(t.shape(), dtype, t.device());
  // Same shape by construction: no broadcast check, and no nested "copy" scope, whose two
  // profiler marks per cast (a parameter's in forward, its gradient's in backward) cost more
  // than a small conversion itself.
  convert_into(out, t);
  if (is_floating(t.dtype()) && is_floating(dtype) && autograd::needs_grad({t})) {
    autograd::record(std::make_shared<CastBackward>(t.dtype()), {t}, {out});
  }
  return out;
}

Tensor to_device(const Tensor& t, Device device) {
  if (t.device() == device) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), device);
  copy_(out, t);
  if (autograd::needs_grad({t})) {
    autograd::record(std::make_shared<ToDeviceBackward>(t.device()), {t}, {out});
  }
  return out;
}

}  // namespace longnet
