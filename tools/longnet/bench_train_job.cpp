#include "tools/longnet/bench_train_job.h"

#include <optional>

#include "framework/ops/factory.h"

namespace longnet::tools {

TrainingJob::TrainingJob(const ModelConfig& config, Device device, uint64_t seed) : device_(device), gen_(seed) {
  DefaultDeviceGuard guard(device);
  model_ = std::make_unique<LongNetLM>(config);
  optim::OptimizerSpec spec;
  spec.lr = 1e-4;
  optimizer_ = optim::make_optimizer(spec, optim::make_param_groups(model_->named_parameters(), 0.1));
}

void TrainingJob::set_layout(const TrainingLayout& layout) {
  reducer_.reset();
  tokens_ = targets_ = Tensor();
  layout_ = layout;
  const int64_t vocab = model_->config().vocab_size;
  tokens_ = randint(0, vocab, {1, layout.tokens}, DType::I64, device_, &gen_);
  targets_ = randint(0, vocab, {1, layout.tokens}, DType::I64, device_, &gen_);
  if (layout.reduce != nullptr && layout.reduce->size() > 1) {
    reducer_ = std::make_unique<dist::GradientReducer>(*layout.reduce, model_->parameters());
  }
}

void TrainingJob::step() {
  DefaultDeviceGuard guard(device_);
  std::optional<SequenceParallelScope> scope;
  if (layout_.sp != nullptr) scope.emplace(*layout_.sp, layout_.placement);
  optimizer_->zero_grad();
  model_->loss(tokens_, targets_, layout_.positions).loss.backward();
  if (reducer_) reducer_->finish();
  optimizer_->step();
}

}  // namespace longnet::tools
