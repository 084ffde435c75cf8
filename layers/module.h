#pragma once
// Module: the base of every layer and model. A module owns named parameters (leaf tensors that
// require grad) and buffers (state that is saved but not trained), and registered submodules, so
// that every tensor of a model has one hierarchical name ("layers.3.self_attn.q_proj.weight") for
// optimizers, checkpoints (state_dict) and summaries.
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet {

/// A named tensor, in registration order.
using NamedTensor = std::pair<std::string, Tensor>;
/// name -> tensor, the form checkpoints are read and written in.
using StateDict = std::map<std::string, Tensor>;

class Module;
/// A named submodule (the module itself has the name "").
using NamedModule = std::pair<std::string, Module*>;

/// Base class of layers and models. Not copyable: parameters have one owner.
class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// Every parameter, this module's first then each submodule's, in registration order, with
  /// dotted names relative to this module.
  std::vector<NamedTensor> named_parameters() const;
  /// The parameters alone, in the same order.
  std::vector<Tensor> parameters() const;
  /// Every buffer, named like the parameters.
  std::vector<NamedTensor> named_buffers() const;
  /// This module ("") and every submodule below it, depth first.
  std::vector<NamedModule> named_modules() const;
  /// The direct submodules.
  std::vector<NamedModule> named_children() const;
  /// The short type name shown by summaries ("Linear", "DecoderLayer").
  virtual std::string type_name() const { return "Module"; }

  /// Sets training mode here and in every submodule (dropout is active only in training).
  void train(bool on = true);
  /// Same as train(false).
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Moves every parameter and buffer to `device` in place: the tensors keep their identity, so
  /// handles held elsewhere (an optimizer, an attention core) see the move. Gradients move too.
  void to(Device device);
  /// Converts every floating parameter and buffer to `dtype` in place (integer buffers stay).
  void to(DType dtype);
  /// Clears the accumulated gradient of every parameter.
  void zero_grad();

  /// Parameters and buffers by name (the tensors themselves, not copies).
  StateDict state_dict() const;
  /// Keys of a load that matched nothing: the module's names absent from the state, and the
  /// state's names the module does not have.
  struct LoadResult {
    std::vector<std::string> missing;
    std::vector<std::string> unexpected;
  };
  /// Copies values into the parameters and buffers with the same names (converting dtype and
  /// device). With `strict`, any missing or unexpected key is an error; mis-shaped keys are errors
  /// either way. The error lists every offending key, and nothing is changed when it is thrown.
  /// Without `strict`, the keys that matched are loaded and the others returned.
  LoadResult load_state_dict(const StateDict& state, bool strict = true);

  /// Number of parameter elements below this module.
  int64_t parameter_count() const;

 protected:
  /// Registers `t` as a parameter (marks it requires_grad) and returns it. Names are unique per
  /// module and contain no dots.
  Tensor register_parameter(const std::string& name, Tensor t);
  /// Registers a buffer (saved in state_dict, never trained) and returns it.
  Tensor register_buffer(const std::string& name, Tensor t);
  /// Registers a submodule and returns it.
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void check_new_name(const std::string& name) const;
  void collect(const std::string& prefix, bool buffers, std::vector<NamedTensor>& out) const;
  void collect_parameters(std::vector<Tensor>& out) const;
  void collect_modules(const std::string& prefix, std::vector<NamedModule>& out) const;

  std::vector<NamedTensor> params_;
  std::vector<NamedTensor> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

/// An ordered list of submodules named "0", "1", ...
template <class M>
class ModuleList : public Module {
 public:
  std::string type_name() const override { return "ModuleList"; }
  /// Appends a module (registered as the next index).
  void push_back(std::shared_ptr<M> m) { items_.push_back(register_module(std::to_string(items_.size()), std::move(m))); }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) const { return *items_[i]; }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

/// `param` in the dtype of the activations `x` (a differentiable cast, or `param` itself when they
/// agree): f32 master weights used by 16-bit activations receive f32 gradients. Inside a
/// ParamCastScope that converted `param` to x's dtype, that conversion.
Tensor in_dtype_of(const Tensor& param, const Tensor& x);

/// Converts a module's parameters to the compute dtype together (cast_many: one launch forward,
/// one for their gradients in backward, instead of one each) and, while alive, makes
/// in_dtype_of(param, x) with x in that dtype return the conversion made here. Per thread; scopes
/// nest (the innermost that holds a parameter wins) and must end in reverse order of creation.
/// Outside every scope (a chunked block recomputed in backward, say), in_dtype_of casts alone,
/// with the same values and gradients.
class ParamCastScope {
 public:
  /// Converts `params` (those not already in `dtype`) to `dtype`.
  ParamCastScope(std::span<const Tensor> params, DType dtype);
  ~ParamCastScope();
  ParamCastScope(const ParamCastScope&) = delete;
  ParamCastScope& operator=(const ParamCastScope&) = delete;

  /// The conversion of `param` to `dtype` held by the innermost scope that has one, or undefined.
  static Tensor find(const Tensor& param, DType dtype);

 private:
  DType dtype_;
  std::unordered_map<const TensorImpl*, Tensor> converted_;
  ParamCastScope* outer_;
};

/// Replaces the data of `t` in place by `value` (its storage, geometry and dtype), keeping the
/// tensor's identity and autograd state; the gradient, if any, is converted alike.
void set_tensor_data(const Tensor& t, const Tensor& value);

}  // namespace longnet
