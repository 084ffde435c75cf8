#pragma once
// The tensor handle: a cheap shared pointer to storage + offset + shape + strides + dtype, plus the
// autograd state of the value (requires_grad, grad, the node that produced it).
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "framework/core/device.h"
#include "framework/core/dtype.h"
#include "framework/core/shape.h"
#include "framework/core/storage.h"

namespace longnet {

class Tensor;
namespace autograd {
class Node;
class AccumulateGrad;
}  // namespace autograd

/// Called with a leaf's accumulated gradient each time backward adds to it.
using GradReadyHook = std::function<void(const Tensor& grad)>;

/// Autograd state of one tensor; absent for plain values.
struct AutogradMeta {
  bool requires_grad = false;
  std::shared_ptr<Tensor> grad;                     // accumulated gradient of a leaf
  std::shared_ptr<autograd::Node> grad_fn;          // producer of a non-leaf
  uint32_t output_nr = 0;                           // which output of grad_fn this is
  std::weak_ptr<autograd::AccumulateGrad> accumulator;  // shared by all uses of a leaf
  std::vector<GradReadyHook> hooks;
};

/// The data a Tensor handle points at.
struct TensorImpl {
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  Shape shape;
  Strides strides;
  DType dtype = DType::F32;
  std::unique_ptr<AutogradMeta> autograd;
};

/// An n-dimensional array. Copying a Tensor copies the handle, not the data; views share storage.
class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  /// Allocates an uninitialised contiguous tensor.
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device device = default_device());
  /// Wraps existing storage with the given geometry (no copy).
  static Tensor from_storage(std::shared_ptr<Storage> storage, int64_t offset, Shape shape,
                             Strides strides, DType dtype);

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  const Shape& shape() const;
  const Strides& strides() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  /// Size of dimension d (negative counts from the end).
  int64_t size(int64_t d) const;
  /// Stride of dimension d (negative counts from the end).
  int64_t stride(int64_t d) const;
  int64_t offset() const { return checked().offset; }
  int64_t numel() const { return numel_of(shape()); }
  DType dtype() const { return checked().dtype; }
  Device device() const { return checked().storage->device(); }
  const std::shared_ptr<Storage>& storage() const { return checked().storage; }
  /// True when the elements are laid out row-major with no gaps.
  bool is_contiguous() const;
  /// Pointer to the first element (storage + offset).
  void* raw_data() const;
  /// Typed pointer to the first element; throws if T does not match the dtype.
  template <class T>
  T* data() const {
    LN_CHECK(dtype_of_v<T> == dtype(), "[data] requested ", dtype_name(dtype_of_v<T>),
             " pointer of a ", dtype_name(dtype()), " tensor");
    return static_cast<T*>(raw_data());
  }
  /// The value of a one-element tensor, converted to double.
  double item() const;
  /// All elements in row-major order, converted to T (copies from the device if needed).
  template <class T>
  std::vector<T> to_vector() const;

  // Autograd.
  bool requires_grad() const;
  /// Marks a leaf as needing gradients; returns *this.
  Tensor& requires_grad_(bool value = true);
  /// The accumulated gradient of a leaf (undefined when none yet).
  Tensor grad() const;
  /// Replaces the accumulated gradient (undefined clears it).
  void set_grad(const Tensor& g) const;
  /// The node that produced this tensor, or null for leaves and plain values.
  const std::shared_ptr<autograd::Node>& grad_fn() const;
  /// True for tensors not produced by a differentiable op.
  bool is_leaf() const { return grad_fn() == nullptr; }
  /// Back-propagates from this tensor. `grad` defaults to 1 for a one-element tensor.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  /// A handle to the same data with no autograd history.
  Tensor detach() const;
  /// Registers a hook run each time backward accumulates into this leaf's gradient.
  void register_grad_ready_hook(GradReadyHook hook) const;

  // Views: share storage; differentiable.
  Tensor view(const Shape& shape) const;
  /// A view when the layout allows, else a contiguous copy. One size may be -1.
  Tensor reshape(const Shape& shape) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  /// Elements [start, start + length) along dim.
  Tensor narrow(int64_t dim, int64_t start, int64_t length) const;
  /// Elements start, start + step, ... below end along dim (Python slicing, step > 0).
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  /// Broadcasts size-1 dims (and new leading dims) to `shape`; -1 keeps a size.
  Tensor expand(const Shape& shape) const;
  Tensor squeeze(int64_t dim) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;

  /// This tensor if contiguous, else a contiguous copy.
  Tensor contiguous() const;
  /// A contiguous copy (differentiable).
  Tensor clone() const;
  /// Converted to another dtype (differentiable between float types); same tensor if equal.
  Tensor to(DType dtype) const;
  /// Copied to another device (differentiable); same tensor if equal.
  Tensor to(Device device) const;

  /// "tensor(shape=(2, 3), dtype=f32, device=cpu)" followed by the values (long ones elided).
  std::string to_string() const;

 private:
  /// The data; throws longnet::Error for an undefined tensor rather than dereferencing null.
  const TensorImpl& checked() const {
    LN_CHECK(impl_ != nullptr, "[tensor] use of an undefined tensor");
    return *impl_;
  }

  std::shared_ptr<TensorImpl> impl_;
};

/// Printing a tensor writes to_string().
std::ostream& operator<<(std::ostream& os, const Tensor& t);

}  // namespace longnet
