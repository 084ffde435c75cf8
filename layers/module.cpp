#include "layers/module.h"

#include <algorithm>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/cast_many.h"
#include "framework/ops/copy.h"

namespace longnet {
namespace {

std::string joined(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// "a, b, c" (at most `limit` names, then a count of the rest).
std::string name_list(const std::vector<std::string>& names, size_t limit = 64) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > limit) s += ", ... (" + std::to_string(names.size() - limit) + " more)";
  return s;
}

// Converts every tensor of `named` with `convert` in place (set_tensor_data).
template <class F>
void convert_all(const std::vector<NamedTensor>& named, F&& convert) {
  NoGradGuard no_grad;
  for (const auto& [name, t] : named) {
    const Tensor value = convert(t.detach());
    if (value.impl() != t.impl()) set_tensor_data(t, value);
  }
}

thread_local ParamCastScope* t_innermost_cast_scope = nullptr;

}  // namespace

Tensor in_dtype_of(const Tensor& param, const Tensor& x) {
  if (!param.defined() || param.dtype() == x.dtype()) return param;
  const Tensor converted = ParamCastScope::find(param, x.dtype());
  return converted.defined() ? converted : cast(param, x.dtype());
}

ParamCastScope::ParamCastScope(std::span<const Tensor> params, DType dtype)
    : dtype_(dtype), outer_(t_innermost_cast_scope) {
  const std::vector<Tensor> converted = cast_many(params, dtype);
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].defined() && converted[i].impl() != params[i].impl()) {
      converted_.emplace(params[i].impl(), converted[i]);
    }
  }
  t_innermost_cast_scope = this;
}

ParamCastScope::~ParamCastScope() { t_innermost_cast_scope = outer_; }

Tensor ParamCastScope::find(const Tensor& param, DType dtype) {
  for (const ParamCastScope* s = t_innermost_cast_scope; s != nullptr; s = s->outer_) {
    if (s->dtype_ != dtype) continue;
    const auto it = s->converted_.find(param.impl());
    if (it != s->converted_.end()) return it->second;
  }
  return Tensor();
}

void set_tensor_data(const Tensor& t, const Tensor& value) {
  LN_CHECK(t.defined() && value.defined(), "[set_tensor_data] undefined tensor");
  NoGradGuard no_grad;
  const Tensor grad = t.grad();
  TensorImpl& dst = *t.impl();
  const TensorImpl& src = *value.impl();
  dst.storage = src.storage;
  dst.offset = src.offset;
  dst.shape = src.shape;
  dst.strides = src.strides;
  dst.dtype = src.dtype;
  if (grad.defined()) t.set_grad(grad.to(value.dtype()).to(value.device()));
}

void Module::check_new_name(const std::string& name) const {
  LN_CHECK(!name.empty() && name.find('.') == std::string::npos, "[module] ", type_name(), ": name '", name,
           "' must be non-empty and contain no '.'");
  const auto taken = [&](const auto& list) {
    return std::any_of(list.begin(), list.end(), [&](const auto& e) { return e.first == name; });
  };
  LN_CHECK(!taken(params_) && !taken(buffers_) && !taken(children_), "[module] ", type_name(), ": name '", name,
           "' is already registered");
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  check_new_name(name);
  LN_CHECK(t.defined() && is_floating(t.dtype()), "[module] ", type_name(), ": parameter '", name,
           "' must be a defined float tensor");
  LN_CHECK(t.is_leaf(), "[module] ", type_name(), ": parameter '", name, "' must be a leaf (detach it first)");
  t.requires_grad_(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name);
  LN_CHECK(t.defined(), "[module] ", type_name(), ": buffer '", name, "' is undefined");
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  check_new_name(name);
  LN_CHECK(m != nullptr, "[module] ", type_name(), ": submodule '", name, "' is null");
  m->train(training_);
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, bool buffers, std::vector<NamedTensor>& out) const {
  for (const auto& [name, t] : buffers ? buffers_ : params_) out.emplace_back(joined(prefix, name), t);
  for (const auto& [name, child] : children_) child->collect(joined(prefix, name), buffers, out);
}

void Module::collect_modules(const std::string& prefix, std::vector<NamedModule>& out) const {
  out.emplace_back(prefix, const_cast<Module*>(this));
  for (const auto& [name, child] : children_) child->collect_modules(joined(prefix, name), out);
}

std::vector<NamedTensor> Module::named_parameters() const {
  std::vector<NamedTensor> out;
  collect("", false, out);
  return out;
}

void Module::collect_parameters(std::vector<Tensor>& out) const {
  for (const auto& [name, t] : params_) out.push_back(t);
  for (const auto& [name, child] : children_) child->collect_parameters(out);
}

std::vector<Tensor> Module::parameters() const {
  // Without the names: layers list their parameters on every forward (ParamCastScope).
  std::vector<Tensor> out;
  collect_parameters(out);
  return out;
}

std::vector<NamedTensor> Module::named_buffers() const {
  std::vector<NamedTensor> out;
  collect("", true, out);
  return out;
}

std::vector<NamedModule> Module::named_modules() const {
  std::vector<NamedModule> out;
  collect_modules("", out);
  return out;
}

std::vector<NamedModule> Module::named_children() const {
  std::vector<NamedModule> out;
  for (const auto& [name, child] : children_) out.emplace_back(name, child.get());
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::to(Device device) {
  const auto move = [device](const Tensor& t) { return t.to(device); };
  convert_all(named_parameters(), move);
  convert_all(named_buffers(), move);
}

void Module::to(DType dtype) {
  LN_CHECK(is_floating(dtype), "[module] ", type_name(), ": to() needs a float dtype, got ", dtype_name(dtype));
  const auto convert = [dtype](const Tensor& t) { return is_floating(t.dtype()) ? t.to(dtype) : t; };
  convert_all(named_parameters(), convert);
  convert_all(named_buffers(), convert);
}

void Module::zero_grad() {
  for (const Tensor& p : parameters()) p.set_grad(Tensor());
}

StateDict Module::state_dict() const {
  StateDict out;
  for (auto& [name, t] : named_parameters()) out.emplace(name, t);
  for (auto& [name, t] : named_buffers()) out.emplace(name, t);
  return out;
}

Module::LoadResult Module::load_state_dict(const StateDict& state, bool strict) {
  const StateDict own = state_dict();
  LoadResult result;
  std::vector<std::string> misshaped;
  for (const auto& [name, t] : own) {
    const auto it = state.find(name);
    if (it == state.end()) {
      result.missing.push_back(name);
    } else if (!it->second.defined() || it->second.shape() != t.shape()) {
      misshaped.push_back(name + " (model " + shape_str(t.shape()) + ", given " +
                          (it->second.defined() ? shape_str(it->second.shape()) : std::string("undefined")) + ")");
    }
  }
  for (const auto& [name, t] : state) {
    if (!own.count(name)) result.unexpected.push_back(name);
  }
  const bool fail = !misshaped.empty() || (strict && (!result.missing.empty() || !result.unexpected.empty()));
  if (fail) {
    std::string msg = "[load_state_dict] " + type_name() + ": the state does not fit the model";
    if (!misshaped.empty()) msg += "\n  mis-shaped keys (" + std::to_string(misshaped.size()) + "): " + name_list(misshaped);
    if (strict && !result.missing.empty())
      msg += "\n  missing keys (" + std::to_string(result.missing.size()) + "): " + name_list(result.missing);
    if (strict && !result.unexpected.empty())
      msg += "\n  unexpected keys (" + std::to_string(result.unexpected.size()) + "): " + name_list(result.unexpected);
    LN_FAIL(msg);
  }
  NoGradGuard no_grad;
  for (const auto& [name, t] : own) {
    const auto it = state.find(name);
    if (it != state.end()) copy_(t, it->second);
  }
  return result;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const Tensor& p : parameters()) n += p.numel();
  return n;
}

}  // namespace longnet
