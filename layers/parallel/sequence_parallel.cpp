#include "layers/parallel/sequence_parallel.h"

#include <limits>
#include <mutex>

#include "framework/core/error.h"
#include "framework/dist/functional.h"
#include "framework/ops/ops.h"
#include "layers/attention/dilated.h"

namespace longnet {
namespace {

thread_local dist::Communicator* t_group = nullptr;
thread_local SequencePlacement t_placement = SequencePlacement::Contiguous;

dist::Communicator& required_group(const char* core) {
  dist::Communicator* g = sequence_parallel_group();
  LN_CHECK(g != nullptr, "[", core, "] no sequence-parallel group on this thread (open a SequenceParallelScope)");
  return *g;
}

void check_parallel_inputs(const char* core, const Tensor& q, const Tensor& k, const Tensor& v,
                           const AttentionOptions& options) {
  check_core_inputs(core, q, k, v, options, false);
  LN_CHECK(!options.key_padding_mask.defined(), "[", core, "] key padding is not supported");
}

// Sparsified rows of a branch with rate r: head h keeps rows (h mod r) + r t of its chunk.
// x (B, n, H, D) -> (B, n / r, H, D).
Tensor sparsify_rows(const Tensor& x, int64_t r) {
  if (r == 1) return x;
  const int64_t b = x.size(0), n = x.size(1), h = x.size(2), d = x.size(3);
  const Tensor grouped = x.reshape({b, n / r, r, h, d});
  std::vector<Tensor> heads;
  for (int64_t i = 0; i < h; ++i) heads.push_back(grouped.narrow(2, i % r, 1).narrow(3, i, 1));
  return cat(heads, 3).reshape({b, n / r, h, d});
}

// The inverse placement of a branch's result: out rows back at their positions (0 elsewhere) and
// lse (B, H, n / r) likewise (-inf elsewhere, so that the merge gives them no weight).
AttentionOutput scatter_rows(const AttentionOutput& part, int64_t r, int64_t n) {
  if (r == 1) return part;
  const Tensor& o = part.out;
  const int64_t b = o.size(0), m = o.size(1), h = o.size(2), d = o.size(3);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<Tensor> outs, lses;
  for (int64_t i = 0; i < h; ++i) {
    const int64_t at = i % r;
    const Tensor oh = o.narrow(2, i, 1).reshape({b, m, 1, 1, d});
    const Tensor lh = part.lse.narrow(1, i, 1).reshape({b, 1, m, 1});
    std::vector<Tensor> orow, lrow;
    if (at > 0) {
      orow.push_back(zeros({b, m, at, 1, d}, o.dtype(), o.device()));
      lrow.push_back(full({b, 1, m, at}, -inf, lh.dtype(), lh.device()));
    }
    orow.push_back(oh);
    lrow.push_back(lh);
    if (at + 1 < r) {
      orow.push_back(zeros({b, m, r - at - 1, 1, d}, o.dtype(), o.device()));
      lrow.push_back(full({b, 1, m, r - at - 1}, -inf, lh.dtype(), lh.device()));
    }
    outs.push_back(cat(orow, 2));
    lses.push_back(cat(lrow, 3));
  }
  return {cat(outs, 3).reshape({b, n, h, d}), cat(lses, 1).reshape({b, h, n})};
}

}  // namespace

SequenceParallelScope::SequenceParallelScope(dist::Communicator& group, SequencePlacement placement)
    : prev_group_(t_group), prev_placement_(t_placement) {
  t_group = &group;
  t_placement = placement;
}

SequenceParallelScope::~SequenceParallelScope() {
  t_group = prev_group_;
  t_placement = prev_placement_;
}

dist::Communicator* sequence_parallel_group() { return t_group; }
SequencePlacement sequence_placement() { return t_placement; }

Tensor shard_sequence(const Tensor& x, int64_t dim, int rank, int size, SequencePlacement placement) {
  LN_CHECK(size >= 1 && rank >= 0 && rank < size, "[shard_sequence] rank ", rank, " outside a group of ", size);
  const int64_t pieces = placement == SequencePlacement::Zigzag ? 2 * int64_t{size} : size;
  LN_CHECK(x.size(dim) % pieces == 0, "[shard_sequence] length ", x.size(dim), " of shape ", shape_str(x.shape()),
           " does not split into ", pieces, " equal chunks");
  const int64_t len = x.size(dim) / pieces;
  if (placement == SequencePlacement::Contiguous) return x.narrow(dim, rank * len, len);
  return cat({x.narrow(dim, rank * len, len), x.narrow(dim, (pieces - 1 - rank) * len, len)}, dim);
}

int64_t sequence_offset(int rank, int64_t local_length) { return rank * local_length; }

Positions sequence_positions(int rank, int size, int64_t local_length, SequencePlacement placement) {
  if (placement == SequencePlacement::Contiguous) return sequence_offset(rank, local_length);
  LN_CHECK(local_length % 2 == 0, "[sequence_positions] a zigzag rank holds two equal halves; ", local_length,
           " rows do not split in two");
  const int64_t half = local_length / 2;
  return Positions::runs({{rank * half, half}, {(2 * int64_t{size} - 1 - rank) * half, half}});
}

// ---- dilated_parallel ----

DilatedParallelAttention::DilatedParallelAttention(const AttentionConfig& config) : config_(config) {
  // The single-process core validates the schedule.
  DilatedAttention check(config);
}

dist::Communicator& DilatedParallelAttention::segment_group(dist::Communicator& group, int64_t ranks_per_segment) {
  if (cached_for_ != &group) {
    segment_groups_.clear();
    cached_for_ = &group;
  }
  auto it = segment_groups_.find(ranks_per_segment);
  if (it == segment_groups_.end()) {
    const int color = static_cast<int>(group.rank() / ranks_per_segment);
    it = segment_groups_.emplace(ranks_per_segment, group.split(color, group.rank())).first;
  }
  return *it->second;
}

AttentionResult DilatedParallelAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                  const AttentionOptions& options) {
  check_parallel_inputs("dilated_parallel", q, k, v, options);
  dist::Communicator& group = required_group("dilated_parallel");
  LN_CHECK(sequence_placement() == SequencePlacement::Contiguous,
           "[dilated_parallel] needs contiguous sequence placement");
  const int64_t n = q.size(1), total = n * group.size();
  AttentionConfig local = config_;
  local.segment_lengths.clear();
  local.dilation_rates.clear();
  std::vector<AttentionOutput> parts;
  for (size_t i = 0; i < config_.segment_lengths.size(); ++i) {
    const int64_t w = std::min(config_.segment_lengths[i], total), r = config_.dilation_rates[i];
    if (n % w == 0) {  // whole segments inside the chunk: the local core's business
      local.segment_lengths.push_back(w);
      local.dilation_rates.push_back(r);
      continue;
    }
    LN_CHECK(w % n == 0 && n % r == 0, "[dilated_parallel] branch (w ", w, ", r ", r, ") does not fit chunks of ", n,
             " rows: needs w a multiple of the chunk (and the chunk of r) or the chunk a multiple of w");
    dist::Communicator& seg = segment_group(group, w / n);
    AttentionParams params;
    params.scale = config_.scale;
    params.causal = options.causal;
    params.causal_offset = seg.rank() * (n / r);  // this chunk's first sparse row within the segment
    const Tensor ks = dist::all_gather_dim(sparsify_rows(k, r).contiguous(), 1, seg);
    const Tensor vs = dist::all_gather_dim(sparsify_rows(v, r).contiguous(), 1, seg);
    parts.push_back(scatter_rows(attention(sparsify_rows(q, r), ks, vs, params), r, n));
  }
  if (!local.segment_lengths.empty()) {
    DilatedAttention core(local);
    const AttentionResult res = core.forward(q, k, v, options);
    parts.push_back({res.out, res.lse});
  }
  const AttentionOutput merged = parts.size() == 1 ? parts[0] : merge_attention(parts);
  return {merged.out, merged.lse, Tensor()};
}

// ---- head_parallel ----

HeadParallelAttention::HeadParallelAttention(const std::string& inner, const AttentionConfig& config)
    : name_(inner == "dense" ? "head_parallel_dense" : "head_parallel"),
      inner_name_(inner),
      config_(config),
      inner_(make_attention_core(inner, config)) {}

AttentionResult HeadParallelAttention::forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                               const AttentionOptions& options) {
  check_parallel_inputs(name_.c_str(), q, k, v, options);
  dist::Communicator& group = required_group(name_.c_str());
  LN_CHECK(sequence_placement() == SequencePlacement::Contiguous, "[", name_, "] needs contiguous sequence placement");
  const int64_t heads = q.size(2), p = group.size();
  LN_CHECK(heads % p == 0, "[", name_, "] ", heads, " heads do not split over ", p, " ranks");
  if (inner_name_ == "dilated") {
    for (int64_t r : config_.dilation_rates) {
      LN_CHECK((heads / p) % r == 0 || r == 1, "[", name_, "] ", heads / p, " heads per rank is not a multiple of dilation rate ",
               r, ": the heads' offsets would change (use dilated_parallel)");
    }
  }
  // (B, n, H, D) -> (B, N, H / P, D): the sequence gathered, the heads split.
  const auto to_heads = [&](const Tensor& t) { return dist::all_to_all_dim(t, 2, 1, group); };
  const AttentionResult inner = inner_->forward(to_heads(q), to_heads(k), to_heads(v), options);
  AttentionResult result;
  result.out = dist::all_to_all_dim(inner.out, 1, 2, group);
  result.lse = dist::all_to_all_dim(inner.lse, 2, 1, group);
  result.aux_loss = inner.aux_loss;
  return result;
}

void register_parallel_attention_cores() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_attention_core("ring", [](const AttentionConfig& c) { return std::make_unique<RingAttention>(c); });
    register_attention_core("dilated_parallel",
                            [](const AttentionConfig& c) { return std::make_unique<DilatedParallelAttention>(c); });
    register_attention_core("head_parallel",
                            [](const AttentionConfig& c) { return std::make_unique<HeadParallelAttention>("dilated", c); });
    register_attention_core("head_parallel_dense",
                            [](const AttentionConfig& c) { return std::make_unique<HeadParallelAttention>("dense", c); });
  });
}

}  // namespace longnet
