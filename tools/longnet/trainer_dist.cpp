#include "tools/longnet/trainer_dist.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/ops/ops.h"
#include "layers/parallel/sequence_parallel.h"

namespace longnet::tools {

namespace {

// The sequence-parallel algorithm against the attention and model keys (sp > 1).
void check_sequence_algorithm(const RunConfig& c, int sp) {
  const std::string& algorithm = c.parallelism.sequence_algorithm;
  const AttentionSection& a = c.attention;
  const int64_t chunk = c.training.seq_len / sp;
  if (algorithm == "dilated") {
    // config validation already requires attention.kind = "dilated" here.
    for (size_t i = 0; i < a.segment_lengths.size(); ++i) {
      const int64_t w = std::min(a.segment_lengths[i], c.training.seq_len), r = a.dilation_rates[i];
      LN_CHECK(chunk % w == 0 || (w % chunk == 0 && chunk % r == 0), "[train] parallelism.sequence_algorithm = "
               "\"dilated\": the branch (segment ", w, ", rate ", r, ") of attention.segment_lengths and "
               "dilation_rates does not fit chunks of training.seq_len / parallelism.sequence_parallel = ", chunk,
               " tokens; each segment must be a multiple of the chunk (and the chunk a multiple of its rate), or the "
               "chunk a multiple of the segment");
    }
  } else if (algorithm == "ring") {
    LN_CHECK(a.kind == "dense", "[train] parallelism.sequence_algorithm = \"ring\" computes dense attention, but "
             "attention.kind is \"", a.kind, "\" (split dilated attention with \"dilated\" or \"ulysses\")");
  } else {
    LN_CHECK(a.kind == "dense" || a.kind == "dilated", "[train] parallelism.sequence_algorithm = \"ulysses\" splits "
             "dense or dilated attention, not attention.kind = \"", a.kind, "\"");
    const int64_t heads = c.model.heads;
    LN_CHECK(heads % sp == 0, "[train] parallelism.sequence_algorithm = \"ulysses\" splits the heads over the ranks: "
             "model.heads = ", heads, " does not split over parallelism.sequence_parallel = ", sp);
    if (a.kind == "dilated") {
      for (int64_t r : a.dilation_rates) {
        LN_CHECK(r == 1 || (heads / sp) % r == 0, "[train] parallelism.sequence_algorithm = \"ulysses\" gives each "
                 "rank ", heads / sp, " heads, not a multiple of the dilation rate ", r,
                 " (attention.dilation_rates), so the heads' offsets would change; use \"dilated\"");
      }
    }
  }
}

// A host string through the world: its length, then its bytes.
void send_text(dist::Communicator& world, const std::string& text, int to, Device device) {
  world.send(from_vector<int64_t>({static_cast<int64_t>(text.size())}, {1}, Device::cpu()).to(device), to);
  if (text.empty()) return;
  const std::vector<uint8_t> bytes(text.begin(), text.end());
  world.send(from_vector<uint8_t>(bytes, {static_cast<int64_t>(bytes.size())}, Device::cpu()).to(device), to);
}

std::string recv_text(dist::Communicator& world, int from, Device device) {
  const Tensor size = Tensor::empty({1}, DType::I64, device);
  world.recv(size, from);
  const int64_t n = size.to(Device::cpu()).to_vector<int64_t>()[0];
  if (n == 0) return {};
  const Tensor bytes = Tensor::empty({n}, DType::U8, device);
  world.recv(bytes, from);
  const std::vector<uint8_t> v = bytes.to(Device::cpu()).to_vector<uint8_t>();
  return std::string(v.begin(), v.end());
}

}  // namespace

ParallelLayout parallel_layout(const RunConfig& c, int world_size) {
  const ParallelismSection& p = c.parallelism;
  const TrainingSection& t = c.training;
  LN_CHECK(p.nproc_per_node == 1, "[train] parallelism.nproc_per_node = ", p.nproc_per_node,
           " is for the `longnet train` command, which starts that many processes; each of them trains as one rank");
  const std::string ranks =
      std::to_string(world_size) +
      (world_size == 1 ? " (a single process; start several with mpirun -np N or --nproc-per-node N)" : "");
  ParallelLayout l;
  l.world = world_size;
  l.sp = static_cast<int>(p.sequence_parallel);
  if (p.data_parallel == 0) {
    LN_CHECK(world_size % l.sp == 0, "[train] parallelism.sequence_parallel = ", l.sp,
             " does not divide the number of ranks, ", ranks);
    l.dp = world_size / l.sp;
  } else {
    l.dp = static_cast<int>(p.data_parallel);
  }
  LN_CHECK(int64_t{l.dp} * l.sp == world_size, "[train] parallelism.data_parallel (", l.dp,
           ") x parallelism.sequence_parallel (", l.sp, ") = ", int64_t{l.dp} * l.sp,
           " ranks, but the number of ranks is ", ranks);
  LN_CHECK(t.batch_size % l.dp == 0, "[train] training.batch_size = ", t.batch_size,
           " (the global batch of a micro-step) does not split over parallelism.data_parallel = ", l.dp,
           " replicas; make it a multiple of ", l.dp);
  if (l.sp > 1) {
    LN_CHECK(c.model.kind == "decoder", "[train] parallelism.sequence_parallel = ", l.sp, " splits the sequences of a "
             "decoder-only model; model.kind = \"", c.model.kind, "\" trains with data parallelism only");
    LN_CHECK(t.seq_len % l.sp == 0, "[train] training.seq_len = ", t.seq_len,
             " does not split over parallelism.sequence_parallel = ", l.sp, " ranks; make it a multiple of ", l.sp);
    check_sequence_algorithm(c, l.sp);
    if (p.sequence_algorithm == "ring") {
      l.placement = SequencePlacement::Zigzag;
      LN_CHECK(t.seq_len % (2 * l.sp) == 0, "[train] parallelism.sequence_algorithm = \"ring\" gives each rank two "
               "chunks (zigzag): training.seq_len = ", t.seq_len, " must be a multiple of 2 x sequence_parallel = ",
               2 * l.sp);
    }
  }
  return l;
}

std::string parallel_attention_core(const RunConfig& c, int sp) {
  if (sp == 1) return c.attention.kind;
  const std::string& algorithm = c.parallelism.sequence_algorithm;
  if (algorithm == "dilated") return "dilated_parallel";
  if (algorithm == "ring") return "ring";
  return c.attention.kind == "dense" ? "head_parallel_dense" : "head_parallel";
}

RankContext::RankContext(dist::Communicator* world, const ParallelLayout& layout, Device device)
    : world_(world != nullptr && world->size() > 1 ? world : nullptr), layout_(layout), device_(device) {
  LN_CHECK(layout.world == size(), "[train] the layout is for ", layout.world, " ranks, the world has ", size());
  if (world_) mesh_ = dist::make_mesh(*world_, layout.dp, layout.sp);
}

dist::Communicator& RankContext::world() const {
  LN_CHECK(world_ != nullptr, "[train] a single-process run has no world communicator");
  return *world_;
}

data::Batch RankContext::local_rows(const data::Batch& global) const {
  if (!world_) return global;
  data::Batch local = global;
  for (Tensor& f : local.fields) {
    const int64_t rows = f.size(0) / layout_.dp;
    f = f.narrow(0, mesh_.dp_rank * rows, rows).contiguous().to(device_);
  }
  return local;
}

Tensor RankContext::sequence_part(const Tensor& x) const {
  if (layout_.sp == 1) return x;
  return shard_sequence(x, 1, mesh_.sp_rank, layout_.sp, layout_.placement).contiguous();
}

Positions RankContext::positions(int64_t local_length) const {
  return sequence_positions(mesh_.sp_rank, layout_.sp, local_length, layout_.placement);
}

std::vector<double> RankContext::sum(const std::vector<double>& values) const {
  if (!world_ || values.empty()) return values;
  const Tensor t = from_vector<double>(values, {static_cast<int64_t>(values.size())}, Device::cpu()).to(device_);
  world_->all_reduce(t, dist::ReduceOp::Sum);
  return t.to(Device::cpu()).to_vector<double>();
}

int64_t RankContext::broadcast(int64_t value) const {
  if (!world_) return value;
  const Tensor t = from_vector<int64_t>({value}, {1}, Device::cpu()).to(device_);
  world_->broadcast(t, 0);
  return t.to(Device::cpu()).to_vector<int64_t>()[0];
}

void RankContext::barrier() const {
  if (world_) world_->barrier();
}

int64_t count_targets(const Tensor& targets, int64_t ignore_index) {
  return static_cast<int64_t>(
      sum(cast(compare(targets, static_cast<double>(ignore_index), CompareOp::Ne), DType::I64)).item());
}

optim::OptimizerState gather_optimizer_state(dist::Communicator& world, const optim::Optimizer& optimizer,
                                             Device device) {
  optim::OptimizerState mine = optimizer.state_dict();
  if (world.rank() != 0) {
    // What rank 0 needs to receive the tensors: their names, shapes and dtypes, in map order.
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& [name, t] : mine.tensors) {
      tensors.push_back({{"name", name}, {"shape", t.shape()}, {"dtype", dtype_name(t.dtype())}});
    }
    const nlohmann::json meta = {{"param_updates", mine.scalars.at("param_updates")}, {"tensors", tensors}};
    send_text(world, meta.dump(), 0, device);
    for (const auto& [name, t] : mine.tensors) world.send(t.contiguous(), 0);
    return {};
  }
  nlohmann::json& updates = mine.scalars.at("param_updates");
  for (int r = 1; r < world.size(); ++r) {
    const nlohmann::json meta = nlohmann::json::parse(recv_text(world, r, device));
    for (const auto& [name, count] : meta.at("param_updates").items()) updates[name] = count;
    for (const nlohmann::json& entry : meta.at("tensors")) {
      Tensor t = Tensor::empty(entry.at("shape").get<std::vector<int64_t>>(),
                               dtype_from_name(entry.at("dtype").get<std::string>()), device);
      world.recv(t, r);
      mine.tensors[entry.at("name").get<std::string>()] = t;
    }
  }
  return mine;
}

RngState rank_stream(RngState saved, int rank) {
  if (rank == 0) return saved;
  // splitmix64 of the rank: well-separated seeds for neighbouring ranks.
  uint64_t z = static_cast<uint64_t>(rank) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return {saved.seed ^ (z ^ (z >> 31)), saved.offset};
}

}  // namespace longnet::tools
