#include "framework/dist/reducer.h"

#include <algorithm>
#include <numeric>

#include "framework/autograd/grad_mode.h"
#include "framework/core/error.h"
#include "framework/ops/copy.h"
#include "framework/ops/factory.h"

namespace longnet::dist {
namespace {

constexpr size_t kSlotAlign = 256;

}  // namespace

struct GradientReducer::State {
  struct Bucket {
    std::vector<size_t> params;
    Tensor flat;
    std::vector<Tensor> slots;  // per parameter, its view of flat
    int ready = 0;
    std::shared_ptr<Work> work;
  };

  Communicator& comm;
  std::vector<Tensor> params;
  ReduceOp op;
  std::vector<Bucket> buckets;
  std::vector<size_t> bucket_of;
  std::vector<bool> ready;
  size_t next = 0;  // the first bucket not launched yet
  bool sync = true;
  bool late = false;  // a gradient accumulated into a bucket already launched
  int launched_in_backward = 0;
  int last_launched_in_backward = 0;

  State(Communicator& c, std::vector<Tensor> p, ReduceOp o) : comm(c), params(std::move(p)), op(o) {}

  /// Packs bucket b's gradients (zeros for missing ones) and starts its all-reduce.
  void launch(Bucket& b) {
    NoGradGuard no_grad;
    std::vector<Tensor> dsts, srcs;
    for (size_t k = 0; k < b.params.size(); ++k) {
      const Tensor& g = params[b.params[k]].grad();
      if (g.defined()) {
        dsts.push_back(b.slots[k]);
        srcs.push_back(g);
      } else {
        fill_(b.slots[k], 0.0);
      }
    }
    copy_many_(dsts, srcs);
    b.work = comm.all_reduce_async(b.flat, op);
  }

  /// Launches, in bucket order, every bucket whose gradients are all ready.
  void launch_ready() {
    while (next < buckets.size() && buckets[next].ready == static_cast<int>(buckets[next].params.size())) {
      launch(buckets[next++]);
      ++launched_in_backward;
    }
  }

  void on_grad(size_t i) {
    if (!sync) return;
    if (ready[i]) {  // its bucket may already be on the wire without this contribution
      late = true;
      return;
    }
    ready[i] = true;
    ++buckets[bucket_of[i]].ready;
    launch_ready();
  }
};

GradientReducer::GradientReducer(Communicator& comm, std::vector<Tensor> params, ReducerOptions options)
    : state_(std::make_shared<State>(comm, std::move(params), options.op)) {
  State& s = *state_;
  s.bucket_of.resize(s.params.size());
  s.ready.assign(s.params.size(), false);
  for (size_t n = s.params.size(); n-- > 0;) {
    const Tensor& p = s.params[n];
    LN_CHECK(p.is_leaf() && p.requires_grad(), "[GradientReducer] parameter ", n, " of shape ", shape_str(p.shape()),
             " is not a leaf that requires grad");
    const size_t bytes = p.numel() * dtype_size(p.dtype());
    bool fits = !s.buckets.empty();
    if (fits) {
      const State::Bucket& last = s.buckets.back();
      const Tensor& first = s.params[last.params.front()];
      size_t used = 0;
      for (size_t i : last.params) used += s.params[i].numel() * dtype_size(s.params[i].dtype());
      fits = first.dtype() == p.dtype() && first.device() == p.device() && used + bytes <= options.bucket_bytes;
    }
    if (!fits) s.buckets.emplace_back();
    s.buckets.back().params.push_back(n);
    s.bucket_of[n] = s.buckets.size() - 1;
  }
  for (State::Bucket& b : s.buckets) {
    // Each parameter's piece starts at a multiple of kSlotAlign bytes: whole vector accesses for
    // the packing copies and for the optimizer, which reads the averages where they are.
    const Tensor& first = s.params[b.params.front()];
    const int64_t align = static_cast<int64_t>(kSlotAlign / dtype_size(first.dtype()));
    std::vector<int64_t> at;
    int64_t total = 0;
    for (size_t i : b.params) {
      at.push_back(total);
      total += (s.params[i].numel() + align - 1) / align * align;
    }
    b.flat = zeros({total}, first.dtype(), first.device());
    for (size_t k = 0; k < b.params.size(); ++k) {
      const Tensor& p = s.params[b.params[k]];
      b.slots.push_back(b.flat.narrow(0, at[k], p.numel()).view(p.shape()));
    }
  }
  std::weak_ptr<State> weak = state_;
  for (size_t i = 0; i < s.params.size(); ++i) {
    s.params[i].register_grad_ready_hook([weak, i](const Tensor&) {
      if (auto st = weak.lock()) st->on_grad(i);
    });
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::set_sync(bool on) { state_->sync = on; }

void GradientReducer::finish() {
  State& s = *state_;
  while (s.next < s.buckets.size()) s.launch(s.buckets[s.next++]);
  NoGradGuard no_grad;
  const bool late = s.late;
  s.late = false;
  for (State::Bucket& b : s.buckets) {
    b.work->wait();
    b.work.reset();
    b.ready = 0;
    for (size_t k = 0; k < b.params.size(); ++k) s.params[b.params[k]].set_grad(b.slots[k]);
  }
  s.ready.assign(s.params.size(), false);
  s.next = 0;
  s.last_launched_in_backward = s.launched_in_backward;
  s.launched_in_backward = 0;
  LN_CHECK(!late, "[GradientReducer] a gradient grew after its bucket was reduced (several backwards per finish()): "
           "call set_sync(false) before all but the last backward of an update");
}

std::vector<std::vector<size_t>> GradientReducer::buckets() const {
  std::vector<std::vector<size_t>> out;
  for (const State::Bucket& b : state_->buckets) out.push_back(b.params);
  return out;
}

int GradientReducer::launched_during_backward() const { return state_->last_launched_in_backward; }

ParameterSharding::ParameterSharding(Communicator& comm, std::vector<Tensor> params)
    : comm_(comm), params_(std::move(params)), owners_(params_.size(), 0) {
  std::vector<size_t> order(params_.size());
  std::iota(order.begin(), order.end(), 0);
  // Stable: ties keep the parameter order, so every rank computes the same partition.
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return params_[a].numel() > params_[b].numel(); });
  std::vector<int64_t> load(comm_.size(), 0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owners_[i] = r;
    load[r] += params_[i].numel();
  }
}

std::vector<size_t> ParameterSharding::owned_indices() const {
  std::vector<size_t> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (owners_[i] == comm_.rank()) out.push_back(i);
  }
  return out;
}

std::vector<Tensor> ParameterSharding::owned() const {
  std::vector<Tensor> out;
  for (size_t i : owned_indices()) out.push_back(params_[i]);
  return out;
}

void ParameterSharding::sync_parameters() {
  NoGradGuard no_grad;
  std::vector<std::shared_ptr<Work>> works;
  for (size_t i = 0; i < params_.size(); ++i) {
    LN_CHECK(params_[i].is_contiguous(), "[ParameterSharding] parameter ", i, " is not contiguous");
    works.push_back(comm_.broadcast_async(params_[i].detach(), owners_[i]));
  }
  for (auto& w : works) w->wait();
}

}  // namespace longnet::dist
