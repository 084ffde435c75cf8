#pragma once
// Optimizers over parameter groups: SGD (momentum, Nesterov), Adam (L2 decay) and AdamW
// (decoupled decay), all on the fused framework kernels. Parameters are plain leaf tensors with
// names, so nothing here depends on layers/. Optional f32 master weights for bf16/f16 parameters:
// the optimizer updates its f32 copy and rounds it back into the model's tensor.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/core/tensor.h"

namespace longnet::optim {

/// A named parameter, as Module::named_parameters() lists them.
using NamedParam = std::pair<std::string, Tensor>;

/// Parameters that share hyper-parameters.
struct ParamGroup {
  std::vector<Tensor> params;
  /// One per parameter, unique across all groups: the keys of the optimizer state.
  std::vector<std::string> names;
  /// This group's learning rate is the optimizer's times lr_scale.
  double lr_scale = 1.0;
  double weight_decay = 0.0;
};

/// True for parameters that get no weight decay.
using NoDecayPredicate = std::function<bool(const std::string& name, const Tensor& param)>;

/// Excludes tensors of fewer than two dims (biases, norm gains) and those whose name contains any
/// of `patterns` (by default norms, biases and embeddings).
NoDecayPredicate no_decay_by_name(std::vector<std::string> patterns = {"bias", "norm", "embed"});

/// Groups named parameters into a decayed group (weight_decay) and an excluded one (0), in the
/// given order. Parameters that do not require grad (frozen) are left out, and a tensor listed
/// twice (tied weights) is kept once under its first name. Empty groups are dropped.
std::vector<ParamGroup> make_param_groups(const std::vector<NamedParam>& params, double weight_decay,
                                          const NoDecayPredicate& no_decay = no_decay_by_name());

/// Optimizer state in a checkpointable form: tensors named "<param name>.<state name>" (for
/// example "layers.0.fc1.weight.exp_avg") and scalars (step counts, learning rate) as JSON.
struct OptimizerState {
  std::map<std::string, Tensor> tensors;
  nlohmann::json scalars;
};

/// Base of the optimizers: owns per-parameter state and the f32 master copies, and batches the
/// parameters that share a step's hyper-parameters; subclasses implement the update of a batch.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// "sgd", "adam" or "adamw".
  virtual std::string name() const = 0;

  /// Updates every parameter that has a gradient (the others keep their value and state).
  void step();
  /// Clears every parameter's gradient.
  void zero_grad();

  /// The base learning rate (each group scales it by its lr_scale).
  double lr() const { return lr_; }
  /// Sets the base learning rate (a schedule calls this before each step).
  void set_lr(double lr);
  /// Number of step() calls so far (restored by load_state_dict).
  int64_t step_count() const { return step_count_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }
  /// Every parameter, group by group (for gradient clipping).
  std::vector<Tensor> parameters() const;
  /// The f32 master copy of a 16-bit parameter, or undefined when it has none.
  Tensor master_weight(const std::string& param_name) const;

  /// The state: views of the live tensors, to be written out before the next step().
  OptimizerState state_dict() const;
  /// Restores a state saved from an optimizer of the same kind over parameters of the same
  /// names and shapes (the groups' lr_scale and weight_decay stay this optimizer's own).
  void load_state_dict(const OptimizerState& state);

 protected:
  /// One parameter and its state.
  struct Slot {
    std::string name;
    Tensor param;               // the model's tensor
    Tensor master;              // f32 copy of a 16-bit param, else undefined
    int64_t updates = 0;        // steps that updated this parameter
    std::vector<Tensor> state;  // in state_names() order; undefined until the first update
    size_t group = 0;
  };

  /// Parameters updated together: one group, one count of earlier updates, one device, so one
  /// set of step hyper-parameters (on a GPU a few kernel launches for all of them).
  struct Batch {
    size_t group = 0;
    int64_t updates = 0;
    Device device;
    std::vector<Slot*> slots;
    std::vector<Tensor> targets;  // each slot's master copy or parameter
    std::vector<Tensor> grads;
  };

  /// `master_weights`: keep f32 copies of bf16/f16 parameters (without them such parameters are
  /// rejected, since the update kernels need f32 or f64 parameters).
  Optimizer(std::vector<ParamGroup> groups, double lr, bool master_weights);

  /// Names of each parameter's state tensors (the order of Slot::state).
  virtual std::vector<std::string> state_names() const = 0;
  /// Applies one update to each target of `batch` given its gradient, creating missing state.
  /// `lr` already includes the group's scale.
  virtual void update(Batch& batch, double lr, double weight_decay) = 0;
  /// Hyper-parameters recorded with the state, for information.
  virtual nlohmann::json hyperparameters() const = 0;

  /// A zero tensor shaped like the tensor `slot` updates (master or parameter).
  static Tensor zeros_for(const Slot& slot);

 private:
  std::vector<ParamGroup> groups_;
  std::vector<Slot> slots_;
  double lr_;
  int64_t step_count_ = 0;
};

/// SGD with momentum (PyTorch's torch.optim.SGD); weight decay is L2 (added to the gradient).
struct SgdOptions {
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
};

/// Stochastic gradient descent.
class Sgd final : public Optimizer {
 public:
  Sgd(std::vector<ParamGroup> groups, double lr, SgdOptions options = {}, bool master_weights = true);
  std::string name() const override { return "sgd"; }

 private:
  std::vector<std::string> state_names() const override;
  void update(Batch& batch, double lr, double weight_decay) override;
  nlohmann::json hyperparameters() const override;

  SgdOptions options_;
};

/// Adam's moment coefficients.
struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  /// true: AdamW (param *= 1 - lr * weight_decay); false: Adam (grad += weight_decay * param).
  bool decoupled_weight_decay = true;
};

/// Adam and AdamW.
class Adam final : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, double lr, AdamOptions options = {}, bool master_weights = true);
  std::string name() const override { return options_.decoupled_weight_decay ? "adamw" : "adam"; }

 private:
  std::vector<std::string> state_names() const override;
  void update(Batch& batch, double lr, double weight_decay) override;
  nlohmann::json hyperparameters() const override;

  AdamOptions options_;
};

/// What make_optimizer builds (the optimizer section of a run config).
struct OptimizerSpec {
  std::string name = "adamw";  // sgd | adam | adamw
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double momentum = 0.0;
  bool nesterov = false;
  bool master_weights = true;
};

/// The optimizer `spec.name` names, over `groups`; throws listing the known names otherwise.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerSpec& spec, std::vector<ParamGroup> groups);

}  // namespace longnet::optim
