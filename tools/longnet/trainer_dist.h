#pragma once
// The distributed side of a training run. The ranks of a world form a data-parallel x
// sequence-parallel mesh (parallelism.data_parallel x parallelism.sequence_parallel). Every rank
// builds the same model and the same loader over the global batch, and computes its part: rows
// [dp_rank * B / dp, (dp_rank + 1) * B / dp) of each batch and its part of each sequence
// (chunk sp_rank; with ring attention the zigzag pair of chunks sp_rank and 2 sp - 1 - sp_rank,
// which evens out causal work), the positions encoded where those tokens sit in the sequence. The loader's position and the
// checkpoints are therefore the same at every world size. The few values the loop must agree on
// (the loss, target counts, the stop flag, the checkpoint to resume) go through small
// all-reduces and broadcasts, and ZeRO-1's sharded optimizer state is gathered on rank 0 for
// checkpoints.
#include <cstdint>
#include <string>
#include <vector>

#include "data/loader.h"
#include "framework/core/rng.h"
#include "framework/dist/communicator.h"
#include "framework/dist/mesh.h"
#include "layers/parallel/sequence_parallel.h"
#include "optim/optimizer.h"
#include "tools/longnet/config.h"

namespace longnet::tools {

/// The degrees of a run.
struct ParallelLayout {
  int world = 1;  // ranks in all
  int dp = 1;     // data-parallel replicas
  int sp = 1;     // ranks each sequence is split over
  /// How a sequence lies over its sp ranks: zigzag for ring attention (causal work balanced),
  /// contiguous otherwise (the dilated and Ulysses cores take contiguous chunks).
  SequencePlacement placement = SequencePlacement::Contiguous;
};

/// The layout of `config` on a world of `world_size` ranks (data_parallel 0: world / sp). Throws
/// naming the keys when the degrees do not multiply to the world size, the global batch does not
/// split over the replicas, the sequence over its ranks, or the model and attention do not suit
/// the sequence-parallel algorithm.
ParallelLayout parallel_layout(const RunConfig& config, int world_size);

/// The attention core that computes `config`'s attention with each sequence split over `sp`
/// ranks: attention.kind itself when sp == 1; else by parallelism.sequence_algorithm, dilated ->
/// "dilated_parallel", ring -> "ring" (dense attention), ulysses -> "head_parallel" (dilated) or
/// "head_parallel_dense" (dense).
std::string parallel_attention_core(const RunConfig& config, int sp);

/// This rank's place in a run and the collectives the training loop needs. Without a world (or
/// with a world of one rank) it is a single process: parts are whole and reductions are identities.
class RankContext {
 public:
  /// Splits `world` into the mesh of `layout` (collective over the world). Small reductions go
  /// through tensors on `device` (NCCL reduces GPU memory only).
  RankContext(dist::Communicator* world, const ParallelLayout& layout, Device device);

  bool distributed() const { return world_ != nullptr; }
  /// World rank and size.
  int rank() const { return world_ ? world_->rank() : 0; }
  int size() const { return world_ ? world_->size() : 1; }
  /// Rank 0 writes the run's files and prints.
  bool lead() const { return rank() == 0; }
  const ParallelLayout& layout() const { return layout_; }
  const dist::Mesh& mesh() const { return mesh_; }
  /// The world; only when distributed().
  dist::Communicator& world() const;

  /// This rank's rows of a global batch, on the device.
  data::Batch local_rows(const data::Batch& global) const;
  /// This rank's part of (B, N) sequences: (B, N / sp), by the layout's placement.
  Tensor sequence_part(const Tensor& x) const;
  /// The global positions of the tokens of a part of `local_length` tokens.
  Positions positions(int64_t local_length) const;

  /// Each value summed over the world.
  std::vector<double> sum(const std::vector<double>& values) const;
  /// Rank 0's `value` on every rank.
  int64_t broadcast(int64_t value) const;
  /// Returns once every rank has called it.
  void barrier() const;

 private:
  dist::Communicator* world_;
  ParallelLayout layout_;
  dist::Mesh mesh_;
  Device device_;
};

/// The number of targets of `targets` (any shape, integer ids) that are not `ignore_index`.
int64_t count_targets(const Tensor& targets, int64_t ignore_index);

/// ZeRO-1 checkpoints: every rank's optimizer state (its owned parameters') sent to rank 0, which
/// gets the state a single optimizer over all parameters would have; the other ranks get an
/// empty state. Collective over `world`; tensors travel on `device`.
optim::OptimizerState gather_optimizer_state(dist::Communicator& world, const optim::Optimizer& optimizer,
                                             Device device);

/// The random stream of world rank `rank` resuming stream `saved`: rank 0 continues `saved`
/// itself (so a checkpoint holds rank 0's stream and a single process continues it exactly), the
/// others a seed mixed with their rank at the same offset, so that ranks draw different dropout
/// masks.
RngState rank_stream(RngState saved, int rank);

}  // namespace longnet::tools
