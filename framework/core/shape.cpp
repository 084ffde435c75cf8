#include "framework/core/shape.h"

#include "framework/core/device.h"
#include "framework/core/error.h"

namespace longnet {

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Strides contiguous_strides(const Shape& shape) {
  Strides st(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + ")";
}

int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t lo = ndim == 0 ? -1 : -ndim;
  const int64_t hi = ndim == 0 ? 0 : ndim - 1;
  LN_CHECK(dim >= lo && dim <= hi, "[", op, "] dim ", dim, " out of range for a tensor of ", ndim,
           " dims");
  return dim < 0 ? dim + (ndim == 0 ? 1 : ndim) : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    LN_CHECK(da == db || da == 1 || db == 1, "[", op, "] shapes do not broadcast: ", shape_str(a),
             " vs ", shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Device device_from_string(const std::string& s) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5) {
    size_t pos = 0;
    int idx = -1;
    try {
      idx = std::stoi(s.substr(5), &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos == s.size() - 5 && idx >= 0) return Device::cuda(idx);
  }
  LN_FAIL("[device] cannot parse '", s, "' (expected cpu, cuda or cuda:N)");
}

namespace {
thread_local Device t_default_device = Device::cpu();
}  // namespace

Device default_device() { return t_default_device; }

void set_default_device(Device device) {
#ifndef LONGNET_WITH_CUDA
  LN_CHECK(device.is_cpu(), "[device] cannot make ", device.str(),
           " the default: this build has no CUDA backend (configure with -DLONGNET_CUDA=ON)");
#endif
  t_default_device = device;
}

}  // namespace longnet
