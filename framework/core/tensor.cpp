#include "framework/core/tensor.h"

#include <cstring>
#include <iomanip>
#include <sstream>

#include "framework/autograd/node.h"
#include "framework/ops/copy.h"
#include "framework/ops/view.h"

namespace longnet {

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t s : shape) LN_CHECK(s >= 0, "[empty] negative size in shape ", shape_str(shape));
  auto storage = std::make_shared<Storage>(static_cast<size_t>(numel_of(shape)) * dtype_size(dtype),
                                           device);
  return from_storage(std::move(storage), 0, shape, contiguous_strides(shape), dtype);
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, int64_t offset, Shape shape,
                            Strides strides, DType dtype) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::move(storage);
  impl->offset = offset;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

const Shape& Tensor::shape() const { return checked().shape; }

const Strides& Tensor::strides() const { return checked().strides; }

int64_t Tensor::size(int64_t d) const { return shape()[static_cast<size_t>(wrap_dim(d, dim(), "size"))]; }
int64_t Tensor::stride(int64_t d) const {
  return strides()[static_cast<size_t>(wrap_dim(d, dim(), "stride"))];
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t i = shape().size(); i-- > 0;) {
    if (impl_->shape[i] == 1) continue;
    if (impl_->strides[i] != expected) return false;
    expected *= impl_->shape[i];
  }
  return true;
}

void* Tensor::raw_data() const {
  return static_cast<char*>(impl_->storage->data()) +
         impl_->offset * static_cast<int64_t>(dtype_size(impl_->dtype));
}

double Tensor::item() const {
  LN_CHECK(numel() == 1, "[item] needs a one-element tensor, got shape ", shape_str(shape()));
  return to_vector<double>()[0];
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = to(Device::cpu());
  std::vector<T> out(static_cast<size_t>(numel()));
  if (host.dtype() == dtype_of_v<T> && host.is_contiguous()) {  // a plain copy: no staging tensor
    if (!out.empty()) std::memcpy(out.data(), host.raw_data(), out.size() * sizeof(T));
    return out;
  }
  Tensor dst = Tensor::from_storage(
      std::make_shared<Storage>(out.size() * sizeof(T), Device::cpu()), 0, shape(),
      contiguous_strides(shape()), dtype_of_v<T>);
  copy_(dst, host);
  const T* p = dst.data<T>();
  std::copy(p, p + out.size(), out.begin());
  return out;
}

template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

bool Tensor::requires_grad() const {
  return impl_ && impl_->autograd && impl_->autograd->requires_grad;
}

Tensor& Tensor::requires_grad_(bool value) {
  LN_CHECK(!value || is_floating(dtype()), "[requires_grad_] only float tensors can require grad, got ",
           dtype_name(dtype()));
  LN_CHECK(is_leaf(), "[requires_grad_] can only be set on leaf tensors (use detach() first)");
  if (!impl_->autograd) impl_->autograd = std::make_unique<AutogradMeta>();
  impl_->autograd->requires_grad = value;
  return *this;
}

Tensor Tensor::grad() const {
  if (!impl_ || !impl_->autograd || !impl_->autograd->grad) return Tensor();
  return *impl_->autograd->grad;
}

void Tensor::set_grad(const Tensor& g) const {
  if (!impl_->autograd) impl_->autograd = std::make_unique<AutogradMeta>();
  if (g.defined()) {
    LN_CHECK(g.shape() == shape(), "[set_grad] gradient shape ", shape_str(g.shape()),
             " differs from tensor shape ", shape_str(shape()));
    impl_->autograd->grad = std::make_shared<Tensor>(g);
  } else {
    impl_->autograd->grad.reset();
  }
}

const std::shared_ptr<autograd::Node>& Tensor::grad_fn() const {
  static const std::shared_ptr<autograd::Node> none;
  return impl_ && impl_->autograd ? impl_->autograd->grad_fn : none;
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  autograd::run_backward({*this}, {grad}, retain_graph);
}

Tensor Tensor::detach() const {
  return from_storage(impl_->storage, impl_->offset, impl_->shape, impl_->strides, impl_->dtype);
}

void Tensor::register_grad_ready_hook(GradReadyHook hook) const {
  LN_CHECK(is_leaf() && requires_grad(), "[register_grad_ready_hook] needs a leaf that requires grad");
  impl_->autograd->hooks.push_back(std::move(hook));
}

Tensor Tensor::view(const Shape& s) const { return longnet::view(*this, s); }
Tensor Tensor::reshape(const Shape& s) const { return longnet::reshape(*this, s); }
Tensor Tensor::permute(const std::vector<int64_t>& d) const { return longnet::permute(*this, d); }
Tensor Tensor::transpose(int64_t a, int64_t b) const { return longnet::transpose(*this, a, b); }
Tensor Tensor::narrow(int64_t d, int64_t s, int64_t l) const { return longnet::narrow(*this, d, s, l); }
Tensor Tensor::slice(int64_t d, int64_t s, int64_t e, int64_t st) const {
  return longnet::slice(*this, d, s, e, st);
}
Tensor Tensor::expand(const Shape& s) const { return longnet::expand(*this, s); }
Tensor Tensor::squeeze(int64_t d) const { return longnet::squeeze(*this, d); }
Tensor Tensor::unsqueeze(int64_t d) const { return longnet::unsqueeze(*this, d); }
Tensor Tensor::flatten(int64_t a, int64_t b) const { return longnet::flatten(*this, a, b); }
Tensor Tensor::contiguous() const { return longnet::contiguous(*this); }
Tensor Tensor::clone() const { return longnet::clone(*this); }
Tensor Tensor::to(DType d) const { return cast(*this, d); }
Tensor Tensor::to(Device d) const { return to_device(*this, d); }

namespace {

void print_values(std::ostringstream& os, const std::vector<double>& v, const Shape& shape,
                  size_t dim, int64_t base, bool integral) {
  constexpr int64_t kEdge = 3;  // values shown at each end of a long dim
  if (shape.empty()) {
    os << v[0];
    return;
  }
  const int64_t n = shape[dim];
  int64_t inner = 1;
  for (size_t k = dim + 1; k < shape.size(); ++k) inner *= shape[k];
  os << "[";
  for (int64_t i = 0; i < n; ++i) {
    if (n > 2 * kEdge && i == kEdge) {
      os << (dim + 1 == shape.size() ? "..., " : "...,\n ");
      i = n - kEdge - 1;
      continue;
    }
    if (dim + 1 == shape.size()) {
      const double x = v[static_cast<size_t>(base + i)];
      if (integral) {
        os << static_cast<int64_t>(x);
      } else {
        os << x;
      }
    } else {
      print_values(os, v, shape, dim + 1, base + i * inner, integral);
    }
    if (i + 1 < n) os << (dim + 1 == shape.size() ? ", " : ",\n ");
  }
  os << "]";
}

}  // namespace

std::string Tensor::to_string() const {
  if (!defined()) return "tensor(undefined)";
  std::ostringstream os;
  os << "tensor(shape=" << shape_str(shape()) << ", dtype=" << dtype_name(dtype())
     << ", device=" << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")\n" << std::setprecision(6);
  print_values(os, to_vector<double>(), shape(), 0, 0, !is_floating(dtype()));
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.to_string(); }

}  // namespace longnet
