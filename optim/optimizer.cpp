#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "framework/autograd/grad_mode.h"
#include "framework/core/error.h"
#include "framework/ops/copy.h"
#include "framework/ops/factory.h"
#include "framework/ops/optim_update.h"

namespace longnet::optim {

NoDecayPredicate no_decay_by_name(std::vector<std::string> patterns) {
  return [patterns = std::move(patterns)](const std::string& name, const Tensor& param) {
    if (param.dim() < 2) return true;
    return std::any_of(patterns.begin(), patterns.end(),
                       [&](const std::string& p) { return !p.empty() && name.find(p) != std::string::npos; });
  };
}

std::vector<ParamGroup> make_param_groups(const std::vector<NamedParam>& params, double weight_decay,
                                          const NoDecayPredicate& no_decay) {
  ParamGroup decay, plain;
  decay.weight_decay = weight_decay;
  std::set<const TensorImpl*> seen;
  for (const auto& [name, t] : params) {
    LN_CHECK(t.defined(), "[make_param_groups] parameter '", name, "' is undefined");
    if (!t.requires_grad() || !seen.insert(t.impl()).second) continue;
    ParamGroup& g = no_decay(name, t) ? plain : decay;
    g.params.push_back(t);
    g.names.push_back(name);
  }
  std::vector<ParamGroup> groups;
  if (!decay.params.empty()) groups.push_back(std::move(decay));
  if (!plain.params.empty()) groups.push_back(std::move(plain));
  return groups;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups, double lr, bool master_weights) : groups_(std::move(groups)) {
  set_lr(lr);
  std::set<std::string> names;
  std::set<const TensorImpl*> tensors;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    const ParamGroup& g = groups_[gi];
    LN_CHECK(g.names.size() == g.params.size(), "[optimizer] group ", gi, " has ", g.params.size(),
             " parameters but ", g.names.size(), " names");
    LN_CHECK(std::isfinite(g.lr_scale) && g.lr_scale >= 0.0, "[optimizer] group ", gi,
             " lr_scale must be finite and >= 0, got ", g.lr_scale);
    LN_CHECK(std::isfinite(g.weight_decay) && g.weight_decay >= 0.0, "[optimizer] group ", gi,
             " weight_decay must be finite and >= 0, got ", g.weight_decay);
    for (size_t i = 0; i < g.params.size(); ++i) {
      const std::string& name = g.names[i];
      const Tensor& p = g.params[i];
      LN_CHECK(p.defined(), "[optimizer] parameter '", name, "' is undefined");
      LN_CHECK(names.insert(name).second, "[optimizer] parameter name '", name, "' appears twice");
      LN_CHECK(tensors.insert(p.impl()).second, "[optimizer] parameter '", name,
               "' is the same tensor as an earlier one (list tied weights once)");
      LN_CHECK(p.is_leaf(), "[optimizer] parameter '", name, "' ", shape_str(p.shape()),
               " is the output of an op, not a leaf");
      Slot slot;
      slot.name = name;
      slot.param = p;
      slot.group = gi;
      if (is_reduced_float(p.dtype())) {
        LN_CHECK(master_weights, "[optimizer] parameter '", name, "' is ", dtype_name(p.dtype()),
                 ": enable master weights (f32 copies) to train 16-bit parameters");
        NoGradGuard no_grad;
        slot.master = p.detach().to(DType::F32);
      } else {
        LN_CHECK(p.dtype() == DType::F32 || p.dtype() == DType::F64, "[optimizer] parameter '", name, "' is ",
                 dtype_name(p.dtype()), "; optimizers update float parameters only");
      }
      slots_.push_back(std::move(slot));
    }
  }
}

void Optimizer::set_lr(double lr) {
  LN_CHECK(std::isfinite(lr) && lr >= 0.0, "[optimizer] learning rate must be finite and >= 0, got ", lr);
  lr_ = lr;
}

void Optimizer::step() {
  NoGradGuard no_grad;
  const size_t n_states = state_names().size();
  std::vector<Batch> batches;  // usually one per group: parameters miss steps rarely
  for (Slot& slot : slots_) {
    if (slot.state.size() != n_states) slot.state.resize(n_states);
    const Tensor grad = slot.param.grad();
    if (!grad.defined()) continue;
    const Device device = slot.param.device();
    auto it = std::find_if(batches.begin(), batches.end(), [&](const Batch& b) {
      return b.group == slot.group && b.updates == slot.updates && b.device == device;
    });
    if (it == batches.end()) {
      it = batches.insert(batches.end(), Batch{});
      it->group = slot.group, it->updates = slot.updates, it->device = device;
    }
    it->slots.push_back(&slot);
    it->targets.push_back(slot.master.defined() ? slot.master : slot.param);
    it->grads.push_back(grad);
  }
  for (Batch& batch : batches) {
    const ParamGroup& g = groups_[batch.group];
    update(batch, lr_ * g.lr_scale, g.weight_decay);
    for (Slot* slot : batch.slots) {
      if (slot->master.defined()) copy_(slot->param, slot->master);
      ++slot->updates;
    }
  }
  ++step_count_;
}

void Optimizer::zero_grad() {
  for (const Slot& slot : slots_) slot.param.set_grad(Tensor());
}

std::vector<Tensor> Optimizer::parameters() const {
  std::vector<Tensor> out;
  out.reserve(slots_.size());
  for (const Slot& slot : slots_) out.push_back(slot.param);
  return out;
}

Tensor Optimizer::master_weight(const std::string& param_name) const {
  for (const Slot& slot : slots_) {
    if (slot.name == param_name) return slot.master;
  }
  LN_FAIL("[optimizer] no parameter named '", param_name, "'");
}

Tensor Optimizer::zeros_for(const Slot& slot) {
  return zeros_like(slot.master.defined() ? slot.master : slot.param);
}

OptimizerState Optimizer::state_dict() const {
  OptimizerState out;
  const std::vector<std::string> names = state_names();
  nlohmann::json updates = nlohmann::json::object();
  for (const Slot& slot : slots_) {
    updates[slot.name] = slot.updates;
    if (slot.master.defined()) out.tensors[slot.name + ".master"] = slot.master;
    for (size_t i = 0; i < slot.state.size(); ++i) {
      if (slot.state[i].defined()) out.tensors[slot.name + "." + names[i]] = slot.state[i];
    }
  }
  out.scalars = {{"optimizer", name()},
                 {"step", step_count_},
                 {"lr", lr_},
                 {"param_updates", std::move(updates)},
                 {"hyperparameters", hyperparameters()}};
  return out;
}

void Optimizer::load_state_dict(const OptimizerState& state) {
  const nlohmann::json& s = state.scalars;
  LN_CHECK(s.is_object() && s.contains("optimizer") && s.contains("step") && s.contains("param_updates"),
           "[optimizer] load_state_dict: the scalars lack 'optimizer', 'step' or 'param_updates'");
  const std::string saved = s.at("optimizer").get<std::string>();
  LN_CHECK(saved == name(), "[optimizer] load_state_dict: state of a '", saved, "' optimizer loaded into '", name(), "'");
  const nlohmann::json& updates = s.at("param_updates");
  std::set<std::string> expected;
  for (const Slot& slot : slots_) {
    LN_CHECK(updates.contains(slot.name), "[optimizer] load_state_dict: no state for parameter '", slot.name, "'");
    expected.insert(slot.name);
  }
  for (const auto& [key, value] : updates.items()) {
    LN_CHECK(expected.count(key), "[optimizer] load_state_dict: the state has parameter '", key,
             "', which this optimizer does not hold");
  }
  const std::vector<std::string> names = state_names();
  size_t used = 0;
  // Every tensor is checked and copied before anything is replaced, so a bad state leaves this
  // optimizer unchanged.
  std::vector<Slot> next = slots_;
  for (Slot& slot : next) {
    slot.updates = updates.at(slot.name).get<int64_t>();
    LN_CHECK(slot.updates >= 0, "[optimizer] load_state_dict: negative update count for '", slot.name, "'");
    const Tensor like = slot.master.defined() ? slot.master : slot.param;
    auto take = [&](const std::string& key) -> Tensor {
      auto it = state.tensors.find(key);
      LN_CHECK(it != state.tensors.end(), "[optimizer] load_state_dict: missing tensor '", key, "'");
      LN_CHECK(it->second.shape() == like.shape(), "[optimizer] load_state_dict: '", key, "' is ",
               shape_str(it->second.shape()), " but the parameter is ", shape_str(like.shape()));
      ++used;
      Tensor t = Tensor::empty(like.shape(), like.dtype(), like.device());
      copy_(t, it->second);
      return t;
    };
    if (slot.master.defined()) slot.master = take(slot.name + ".master");
    slot.state.assign(names.size(), Tensor());
    if (slot.updates > 0) {
      for (size_t i = 0; i < names.size(); ++i) slot.state[i] = take(slot.name + "." + names[i]);
    }
  }
  LN_CHECK(used == state.tensors.size(), "[optimizer] load_state_dict: ", state.tensors.size() - used,
           " tensors in the state belong to no parameter of this optimizer");
  slots_ = std::move(next);
  step_count_ = s.at("step").get<int64_t>();
  if (s.contains("lr")) set_lr(s.at("lr").get<double>());
  NoGradGuard no_grad;
  for (Slot& slot : slots_) {
    if (slot.master.defined()) copy_(slot.param, slot.master);
  }
}

Sgd::Sgd(std::vector<ParamGroup> groups, double lr, SgdOptions options, bool master_weights)
    : Optimizer(std::move(groups), lr, master_weights), options_(options) {
  LN_CHECK(options_.momentum >= 0.0 && std::isfinite(options_.momentum), "[sgd] momentum must be finite and >= 0, got ",
           options_.momentum);
  LN_CHECK(!options_.nesterov || (options_.momentum > 0.0 && options_.dampening == 0.0),
           "[sgd] nesterov momentum needs momentum > 0 and dampening 0, got momentum ", options_.momentum,
           " and dampening ", options_.dampening);
}

std::vector<std::string> Sgd::state_names() const {
  if (options_.momentum == 0.0) return {};
  return {"momentum_buffer"};
}

void Sgd::update(Batch& batch, double lr, double weight_decay) {
  SgdParams p;
  p.lr = lr;
  p.momentum = options_.momentum;
  p.dampening = options_.dampening;
  p.weight_decay = weight_decay;
  p.nesterov = options_.nesterov;
  if (options_.momentum == 0.0) return sgd_update_many_(batch.targets, batch.grads, {}, p);
  // A buffer created now starts as the gradient (first_step); the others decay.
  std::vector<Tensor> targets[2], grads[2], buffers[2];  // [0]: existing buffers, [1]: new ones
  for (size_t i = 0; i < batch.slots.size(); ++i) {
    Tensor& buf = batch.slots[i]->state[0];
    const int first = buf.defined() ? 0 : 1;
    if (first) buf = zeros_for(*batch.slots[i]);
    targets[first].push_back(batch.targets[i]);
    grads[first].push_back(batch.grads[i]);
    buffers[first].push_back(buf);
  }
  for (int first = 0; first < 2; ++first) {
    p.first_step = first == 1;
    if (!targets[first].empty()) sgd_update_many_(targets[first], grads[first], buffers[first], p);
  }
}

nlohmann::json Sgd::hyperparameters() const {
  return {{"momentum", options_.momentum}, {"dampening", options_.dampening}, {"nesterov", options_.nesterov}};
}

Adam::Adam(std::vector<ParamGroup> groups, double lr, AdamOptions options, bool master_weights)
    : Optimizer(std::move(groups), lr, master_weights), options_(options) {
  LN_CHECK(options_.beta1 >= 0.0 && options_.beta1 < 1.0 && options_.beta2 >= 0.0 && options_.beta2 < 1.0, "[",
           name(), "] betas must lie in [0, 1), got (", options_.beta1, ", ", options_.beta2, ")");
  LN_CHECK(options_.eps >= 0.0 && std::isfinite(options_.eps), "[", name(), "] eps must be finite and >= 0, got ",
           options_.eps);
}

std::vector<std::string> Adam::state_names() const { return {"exp_avg", "exp_avg_sq"}; }

void Adam::update(Batch& batch, double lr, double weight_decay) {
  std::vector<Tensor> exp_avgs, exp_avg_sqs;
  for (Slot* slot : batch.slots) {
    if (!slot->state[0].defined()) slot->state[0] = zeros_for(*slot);
    if (!slot->state[1].defined()) slot->state[1] = zeros_for(*slot);
    exp_avgs.push_back(slot->state[0]);
    exp_avg_sqs.push_back(slot->state[1]);
  }
  AdamWParams p;
  p.lr = lr;
  p.beta1 = options_.beta1;
  p.beta2 = options_.beta2;
  p.eps = options_.eps;
  p.weight_decay = weight_decay;
  p.step = batch.updates + 1;
  p.l2_decay = !options_.decoupled_weight_decay;
  adamw_update_many_(batch.targets, batch.grads, exp_avgs, exp_avg_sqs, p);
}

nlohmann::json Adam::hyperparameters() const {
  return {{"beta1", options_.beta1}, {"beta2", options_.beta2}, {"eps", options_.eps}};
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerSpec& spec, std::vector<ParamGroup> groups) {
  if (spec.name == "sgd") {
    return std::make_unique<Sgd>(std::move(groups), spec.lr, SgdOptions{spec.momentum, 0.0, spec.nesterov},
                                 spec.master_weights);
  }
  if (spec.name == "adam" || spec.name == "adamw") {
    return std::make_unique<Adam>(std::move(groups), spec.lr,
                                  AdamOptions{spec.beta1, spec.beta2, spec.eps, spec.name == "adamw"},
                                  spec.master_weights);
  }
  LN_FAIL("[make_optimizer] unknown optimizer '", spec.name, "' (known: sgd, adam, adamw)");
}

}  // namespace longnet::optim
