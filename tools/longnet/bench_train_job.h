#pragma once
// One rank's training step as the trainer runs it, for the benchmarks (`bench dist`, `bench train`):
// a LongNet LM, AdamW, and optionally gradient averaging and sequence parallelism.
#include <cstdint>
#include <memory>

#include "framework/core/device.h"
#include "framework/core/rng.h"
#include "framework/core/tensor.h"
#include "framework/dist/communicator.h"
#include "framework/dist/reducer.h"
#include "layers/parallel/sequence_parallel.h"
#include "layers/positions.h"
#include "models/longnet_lm.h"
#include "optim/optimizer.h"

namespace longnet::tools {

/// Where a rank's tokens sit and whom it talks to.
struct TrainingLayout {
  int64_t tokens = 0;                    // this rank's tokens (batch 1)
  Positions positions;                   // global positions of its tokens
  dist::Communicator* reduce = nullptr;  // gradients averaged over this group (null: trained alone)
  dist::Communicator* sp = nullptr;      // the attention's sequence-parallel group (null: none)
  SequencePlacement placement = SequencePlacement::Contiguous;
};

/// One rank's model, optimizer (AdamW, lr 1e-4, weight decay 0.1 on the default groups) and
/// gradient reduction.
class TrainingJob {
 public:
  /// Builds the model (weights from config.seed) on `device`; `seed` draws the tokens.
  TrainingJob(const ModelConfig& config, Device device, uint64_t seed);

  /// Fresh random tokens and gradient reduction for the next steps (the old ones are freed first).
  void set_layout(const TrainingLayout& layout);

  /// zero_grad, the LM loss forward and backward, the gradient reduction, the AdamW update.
  void step();

  int64_t parameters() const { return model_->parameter_count(); }

 private:
  Device device_;
  Generator gen_;
  std::unique_ptr<LongNetLM> model_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<dist::GradientReducer> reducer_;
  Tensor tokens_, targets_;
  TrainingLayout layout_;
};

}  // namespace longnet::tools
