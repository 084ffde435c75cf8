#include "framework/ops/common.h"

#include "framework/autograd/grad_mode.h"
#include "framework/ops/copy.h"

namespace longnet::ops {

Device common_device(const char* op, std::initializer_list<Tensor> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
    } else {
      LN_CHECK(t.device() == first->device(), "[", op, "] tensors on different devices: ",
               first->device().str(), " and ", t.device().str());
    }
  }
  LN_CHECK(first != nullptr, "[", op, "] called with no defined tensor");
  return first->device();
}

void require_float(const char* op, const Tensor& t) {
  LN_CHECK(t.defined(), "[", op, "] undefined tensor argument");
  LN_CHECK(is_floating(t.dtype()), "[", op, "] expected a float tensor, got ", dtype_name(t.dtype()),
           " of shape ", shape_str(t.shape()));
}

void require_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  LN_CHECK(a.defined() && b.defined(), "[", op, "] undefined tensor argument");
  LN_CHECK(a.dtype() == b.dtype(), "[", op, "] dtype mismatch: ", dtype_name(a.dtype()), " ",
           shape_str(a.shape()), " vs ", dtype_name(b.dtype()), " ", shape_str(b.shape()));
}

Strides broadcast_strides(const Tensor& t, const Shape& shape) {
  Strides out(shape.size(), 0);
  const size_t lead = shape.size() - t.shape().size();
  for (size_t i = 0; i < t.shape().size(); ++i) {
    out[lead + i] = t.shape()[i] == 1 && shape[lead + i] != 1 ? 0 : t.strides()[i];
  }
  return out;
}

DType kernel_dtype(const Tensor& t) { return t.device().is_cpu() ? cpu_compute_dtype(t.dtype()) : t.dtype(); }

Tensor kernel_input(const Tensor& t) { return t.device().is_cpu() ? upcast_for_cpu(t) : t; }

DType cpu_compute_dtype(DType t) { return is_reduced_float(t) ? DType::F32 : t; }

Tensor upcast_for_cpu(const Tensor& t) {
  if (!is_reduced_float(t.dtype())) return t;
  NoGradGuard no_grad;
  return cast(t, DType::F32);
}

}  // namespace longnet::ops
