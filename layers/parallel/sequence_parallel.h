#pragma once
// Sequence parallelism: the sequence of every example is split across the ranks of a group, so
// token-wise layers (projections, norms, FFN, the loss) run on the local chunk unchanged and only
// attention communicates. Three attention cores do it, each exact (the same outputs and gradients
// as the single-process core on the whole sequence):
//   - "dilated_parallel": LongNet's distributed algorithm. A branch (w, r) whose segments fit in
//     the local chunk runs locally; a longer one sparsifies k and v first (every r-th row) and
//     all-gathers them within the ranks of each segment (reduce-scatter in backward), so a rank
//     receives w / r rows per branch whatever the sequence length.
//   - "ring": dense attention with k, v blocks rotating around the group (send/recv issued before
//     each block's compute, so the transfer overlaps it), merged by log-sum-exp; the backward
//     rotates k, v with their gradient accumulators. Zigzag placement balances causal work.
//   - "head_parallel" (dilated inside) and "head_parallel_dense": an all-to-all turns the
//     sequence split into a head split, the inner core runs on the whole sequence for H / P heads,
//     and a second all-to-all turns it back (Ulysses).
// The group comes from a SequenceParallelScope on the calling thread (one per rank thread of the
// in-process backend, or the process's group under NCCL). Positions: a rank's chunk starts at
// sequence_offset(); with zigzag placement a rank holds two half chunks (see shard_sequence).
#include <map>
#include <memory>

#include "framework/dist/communicator.h"
#include "layers/attention/core.h"
#include "layers/positions.h"

namespace longnet {

/// How the global sequence is laid out over the ranks of a group of P.
enum class SequencePlacement : uint8_t {
  /// Rank r holds chunk r of P.
  Contiguous,
  /// The sequence is cut into 2P chunks; rank r holds chunks r and 2P - 1 - r (in that order), so
  /// that causal attention gives every rank the same work.
  Zigzag,
};

/// Makes `group` the sequence-parallel group of this thread's parallel attention cores for its
/// scope (restoring the previous one after). The group must outlive the graphs recorded in scope.
class SequenceParallelScope {
 public:
  explicit SequenceParallelScope(dist::Communicator& group,
                                 SequencePlacement placement = SequencePlacement::Contiguous);
  ~SequenceParallelScope();
  SequenceParallelScope(const SequenceParallelScope&) = delete;
  SequenceParallelScope& operator=(const SequenceParallelScope&) = delete;

 private:
  dist::Communicator* prev_group_;
  SequencePlacement prev_placement_;
};

/// This thread's sequence-parallel group, or null outside any scope.
dist::Communicator* sequence_parallel_group();
/// This thread's placement (Contiguous outside any scope).
SequencePlacement sequence_placement();

/// The piece of x (whole sequence along `dim`, length P * n) that `rank` of `size` holds: n rows,
/// two halves for zigzag. Differentiable (a view or a concatenation).
Tensor shard_sequence(const Tensor& x, int64_t dim, int rank, int size,
                      SequencePlacement placement = SequencePlacement::Contiguous);
/// The global position of the first row of a contiguous chunk of `local_length` rows.
int64_t sequence_offset(int rank, int64_t local_length);
/// The global positions of the `local_length` rows `rank` of `size` holds (shard_sequence's
/// rows): an offset, or with zigzag placement its two halves' runs. The models take it for their
/// position encoding.
Positions sequence_positions(int rank, int size, int64_t local_length, SequencePlacement placement);

/// Registers "ring", "dilated_parallel", "head_parallel" and "head_parallel_dense" with the
/// attention core registry (idempotent).
void register_parallel_attention_cores();

/// Ring attention (dense, exact) over the scope's group. Key padding is not supported.
class RingAttention final : public AttentionCore {
 public:
  explicit RingAttention(const AttentionConfig& config) : scale_(config.scale) {}
  std::string name() const override { return "ring"; }
  /// q, k, v (B, n, H, D): this rank's rows of the sequence -> out (B, n, H, D), lse (B, H, n).
  AttentionResult forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) override;

 private:
  std::optional<double> scale_;
};

/// LongNet's distributed dilated attention over the scope's group (contiguous placement). Each
/// branch needs either w % n == 0 (the segment spans whole chunks; n % r == 0 too) or n % w == 0.
class DilatedParallelAttention final : public AttentionCore {
 public:
  explicit DilatedParallelAttention(const AttentionConfig& config);
  std::string name() const override { return "dilated_parallel"; }
  AttentionResult forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) override;

 private:
  /// The group of the ranks sharing a segment of `ranks_per_segment` chunks (split once, cached).
  dist::Communicator& segment_group(dist::Communicator& group, int64_t ranks_per_segment);

  AttentionConfig config_;
  dist::Communicator* cached_for_ = nullptr;
  std::map<int64_t, std::shared_ptr<dist::Communicator>> segment_groups_;
};

/// Head-parallel attention (Ulysses): the inner core runs on H / P heads of the whole sequence.
/// Needs H % P == 0; a dilated inner core also needs (H / P) % r == 0 for every rate r, so that
/// each rank's heads keep their offsets.
class HeadParallelAttention final : public AttentionCore {
 public:
  HeadParallelAttention(const std::string& inner, const AttentionConfig& config);
  std::string name() const override { return name_; }
  AttentionResult forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& options) override;

 private:
  std::string name_, inner_name_;
  AttentionConfig config_;
  std::unique_ptr<AttentionCore> inner_;
};

}  // namespace longnet
