#include "framework/dist/inprocess.h"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>

#include "framework/autograd/grad_mode.h"
#include "framework/core/error.h"

namespace longnet::dist {
namespace {

using Clock = std::chrono::steady_clock;

/// Shared by a world and every group split from it: one failure stops them all.
struct AbortState {
  std::mutex mu;
  std::atomic<bool> aborted{false};
  std::string reason;

  void set(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    if (!aborted) {
      reason = why;
      aborted = true;
    }
  }
  std::string get() {
    std::lock_guard<std::mutex> lock(mu);
    return reason;
  }
};

class Group;

/// One collective in flight: each rank stages a private copy of its input, then reads the others'.
struct Slot {
  std::string op;
  std::vector<Tensor> staged;
  std::vector<std::vector<int64_t>> args;
  int arrived = 0;
  int done = 0;
  std::vector<std::pair<std::shared_ptr<Group>, int>> children;  // split: per rank, its new group and rank
};

class Group {
 public:
  Group(int size, std::shared_ptr<AbortState> abort, std::chrono::milliseconds timeout)
      : size_(size), abort_(std::move(abort)), timeout_(timeout) {}

  int size() const { return size_; }
  const std::shared_ptr<AbortState>& abort_state() const { return abort_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  /// Stages rank's contribution to collective number `seq`.
  void post(uint64_t seq, const char* op, int rank, Tensor staged, std::vector<int64_t> args) {
    std::lock_guard<std::mutex> lock(mu_);
    Slot& slot = slots_[seq];
    if (slot.staged.empty()) {
      slot.op = op;
      slot.staged.resize(size_);
      slot.args.resize(size_);
    }
    LN_CHECK(slot.op == op, "[inprocess] collective #", seq, " mismatch: rank ", rank, " called ", op,
             " where another rank called ", slot.op, " (every rank must call the same collectives in order)");
    slot.staged[rank] = std::move(staged);
    slot.args[rank] = std::move(args);
    ++slot.arrived;
    cv_.notify_all();
  }

  /// Waits until every rank has posted `seq`, runs `read` on the slot (the staged tensors are
  /// immutable by then), and retires the slot when the last rank is done with it. `under_lock`
  /// runs with the group locked (for state the ranks build together).
  void complete(uint64_t seq, int rank, const std::function<void(Slot&)>& under_lock,
                const std::function<void(const Slot&)>& read) {
    std::unique_lock<std::mutex> lock(mu_);
    Slot& slot = slots_[seq];
    wait(lock, rank, slot.op.c_str(), seq, [&] { return slot.arrived == size_; });
    if (under_lock) under_lock(slot);
    lock.unlock();
    read(slot);
    lock.lock();
    if (++slot.done == size_) slots_.erase(seq);
  }

  /// Message number `index` from `from` to `to`.
  void deposit(int from, int to, uint64_t index, Tensor t) {
    std::lock_guard<std::mutex> lock(mu_);
    mail_[{from, to, index}] = std::move(t);
    cv_.notify_all();
  }

  Tensor collect(int from, int to, uint64_t index) {
    std::unique_lock<std::mutex> lock(mu_);
    const auto key = std::make_tuple(from, to, index);
    wait(lock, to, "recv", 0, [&] { return mail_.count(key) > 0; }, from);
    Tensor t = std::move(mail_[key]);
    mail_.erase(key);
    return t;
  }

 private:
  /// Waits for `ready`, polling the abort flag; throws on abort or timeout.
  template <class Pred>
  void wait(std::unique_lock<std::mutex>& lock, int rank, const char* op, uint64_t seq, Pred ready, int peer = -1) {
    const auto deadline = Clock::now() + timeout_;
    while (!ready()) {
      if (abort_->aborted) LN_FAIL("[inprocess] rank ", rank, " stopped in ", op, ": ", abort_->get());
      if (Clock::now() >= deadline) {
        std::string who = peer >= 0 ? "rank " + std::to_string(peer) : "the other ranks";
        LN_FAIL("[inprocess] rank ", rank, " timed out after ", timeout_.count(), " ms in ", op,
                peer >= 0 ? "" : " #", peer >= 0 ? "" : std::to_string(seq), " waiting for ", who);
      }
      cv_.wait_for(lock, std::chrono::milliseconds(20));
    }
  }

  int size_;
  std::shared_ptr<AbortState> abort_;
  std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Slot> slots_;
  std::map<std::tuple<int, int, uint64_t>, Tensor> mail_;
};

/// A private contiguous copy that later in-place writes to `t` cannot change.
Tensor stage(const Tensor& t) {
  NoGradGuard no_grad;
  return t.detach().clone();
}

size_t bytes_of(const Tensor& t) { return static_cast<size_t>(t.numel()) * dtype_size(t.dtype()); }

const char* byte_ptr(const Tensor& t) { return static_cast<const char*>(t.raw_data()); }
char* byte_ptr_mut(const Tensor& t) { return static_cast<char*>(t.raw_data()); }

/// Runs its function on the first wait().
class DeferredWork final : public Work {
 public:
  explicit DeferredWork(std::function<void()> fn) : fn_(std::move(fn)) {}
  void wait() override {
    if (fn_) {
      auto fn = std::move(fn_);
      fn_ = nullptr;
      fn();
    }
  }

 private:
  std::function<void()> fn_;
};

class InProcessCommunicator final : public Communicator {
 public:
  InProcessCommunicator(std::shared_ptr<Group> group, int rank)
      : group_(std::move(group)), rank_(rank), sent_(group_->size()), received_(group_->size()) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  std::string backend() const override { return "inprocess"; }

  std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    check_cpu("all_reduce", t);
    return launch("all_reduce", stage(t), {static_cast<int64_t>(op)}, [this, t, op](const Slot& slot) {
      std::vector<char> acc(byte_ptr(slot.staged[0]), byte_ptr(slot.staged[0]) + bytes_of(t));
      for (int i = 1; i < size(); ++i) detail::reduce_into(acc.data(), slot.staged[i].raw_data(), t.numel(), t.dtype(), op);
      if (op == ReduceOp::Avg) detail::divide_in_place(acc.data(), t.numel(), t.dtype(), size());
      std::memcpy(t.raw_data(), acc.data(), acc.size());
    });
  }

  std::shared_ptr<Work> all_gather_async(const Tensor& input, const Tensor& output) override {
    detail::check_scattered("all_gather", *this, output, input);
    check_cpu("all_gather", input);
    check_cpu("all_gather", output);
    return launch("all_gather", stage(input), {}, [this, output](const Slot& slot) {
      const size_t piece = bytes_of(output) / size();
      for (int i = 0; i < size(); ++i) std::memcpy(byte_ptr_mut(output) + i * piece, byte_ptr(slot.staged[i]), piece);
    });
  }

  std::shared_ptr<Work> reduce_scatter_async(const Tensor& input, const Tensor& output, ReduceOp op) override {
    detail::check_scattered("reduce_scatter", *this, input, output);
    check_cpu("reduce_scatter", input);
    check_cpu("reduce_scatter", output);
    return launch("reduce_scatter", stage(input), {static_cast<int64_t>(op)}, [this, output, op](const Slot& slot) {
      const size_t piece = bytes_of(output);
      const char* first = byte_ptr(slot.staged[0]) + rank_ * piece;
      std::vector<char> acc(first, first + piece);
      for (int i = 1; i < size(); ++i) {
        detail::reduce_into(acc.data(), byte_ptr(slot.staged[i]) + rank_ * piece, output.numel(), output.dtype(), op);
      }
      if (op == ReduceOp::Avg) detail::divide_in_place(acc.data(), output.numel(), output.dtype(), size());
      std::memcpy(output.raw_data(), acc.data(), piece);
    });
  }

  std::shared_ptr<Work> all_to_all_async(const Tensor& input, const Tensor& output) override {
    detail::check_tensor("all_to_all", input, "input");
    detail::check_tensor("all_to_all", output, "output");
    check_cpu("all_to_all", input);
    check_cpu("all_to_all", output);
    LN_CHECK(input.dtype() == output.dtype() && input.numel() == output.numel() && input.numel() % size() == 0,
             "[all_to_all] input ", shape_str(input.shape()), " ", dtype_name(input.dtype()), " and output ",
             shape_str(output.shape()), " ", dtype_name(output.dtype()),
             " must match and split into ", size(), " equal pieces");
    return launch("all_to_all", stage(input), {}, [this, output](const Slot& slot) {
      const size_t piece = bytes_of(output) / size();
      for (int i = 0; i < size(); ++i) {
        std::memcpy(byte_ptr_mut(output) + i * piece, byte_ptr(slot.staged[i]) + rank_ * piece, piece);
      }
    });
  }

  std::shared_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    check_cpu("broadcast", t);
    detail::check_peer("broadcast", *this, root);
    return launch("broadcast", rank_ == root ? stage(t) : Tensor(), {root}, [this, t, root](const Slot& slot) {
      for (int i = 0; i < size(); ++i) {
        LN_CHECK(slot.args[i][0] == root, "[broadcast] ranks disagree on the root: ", root, " here, ",
                 slot.args[i][0], " on rank ", i);
      }
      if (rank_ != root) std::memcpy(t.raw_data(), slot.staged[root].raw_data(), bytes_of(t));
    });
  }

  std::shared_ptr<Work> send_recv_async(const Tensor& send, int to, const Tensor& recv, int from) override {
    if (send.defined()) {
      check_cpu("send", send);
      detail::check_peer("send", *this, to);
      group_->deposit(rank_, to, sent_[to]++, stage(send));
    }
    if (!recv.defined()) return completed_work();
    check_cpu("recv", recv);
    detail::check_peer("recv", *this, from);
    // Messages match receives in posting order, whatever order the receives are waited in. The
    // message is taken on wait(): sends never block, so the ranks overlap their work with the
    // transfer as they would with NCCL.
    return std::make_shared<DeferredWork>([this, recv, from, index = received_[from]++] {
      const Tensor got = group_->collect(from, rank_, index);
      LN_CHECK(got.dtype() == recv.dtype() && got.numel() == recv.numel(), "[recv] rank ", rank_, " expected ",
               shape_str(recv.shape()), " ", dtype_name(recv.dtype()), " from rank ", from, ", got ",
               shape_str(got.shape()), " ", dtype_name(got.dtype()));
      std::memcpy(recv.raw_data(), got.raw_data(), bytes_of(recv));
    });
  }

  void barrier() override { launch("barrier", Tensor(), {}, [](const Slot&) {})->wait(); }

  std::shared_ptr<Communicator> split(int color, int key) override {
    const uint64_t seq = seq_++;
    group_->post(seq, "split", rank_, Tensor(), {color, key});
    std::shared_ptr<Communicator> result;
    group_->complete(
        seq, rank_,
        [this](Slot& slot) {
          if (!slot.children.empty()) return;
          slot.children.resize(size());
          std::map<int64_t, std::vector<std::pair<int64_t, int>>> members;  // color -> (key, rank)
          for (int r = 0; r < size(); ++r) {
            if (slot.args[r][0] >= 0) members[slot.args[r][0]].push_back({slot.args[r][1], r});
          }
          for (auto& [c, list] : members) {
            std::sort(list.begin(), list.end());
            auto child = std::make_shared<Group>(static_cast<int>(list.size()), group_->abort_state(), group_->timeout());
            for (size_t i = 0; i < list.size(); ++i) slot.children[list[i].second] = {child, static_cast<int>(i)};
          }
        },
        [&](const Slot& slot) {
          const auto& [child, new_rank] = slot.children[rank_];
          if (child) result = std::make_shared<InProcessCommunicator>(child, new_rank);
        });
    return result;
  }

  void abort(const std::string& reason) override { group_->abort_state()->set(reason); }

 private:
  void check_cpu(const char* op, const Tensor& t) const {
    detail::check_tensor(op, t, "tensor");
    LN_CHECK(t.device().is_cpu(), "[", op, "] the in-process backend takes CPU tensors, got one on ",
             t.device().str());
  }

  /// Stages this rank's part now (so that no rank ever waits on another's progress to post) and
  /// completes the collective on wait().
  std::shared_ptr<Work> launch(const char* op, Tensor staged, std::vector<int64_t> args,
                               std::function<void(const Slot&)> read) {
    const uint64_t seq = seq_++;
    group_->post(seq, op, rank_, std::move(staged), std::move(args));
    return std::make_shared<DeferredWork>([group = group_, seq, rank = rank_, read = std::move(read)] {
      group->complete(seq, rank, nullptr, read);
    });
  }

  std::shared_ptr<Group> group_;
  int rank_;
  uint64_t seq_ = 0;
  std::vector<uint64_t> sent_, received_;  // messages posted to / from each peer
};

}  // namespace

std::vector<std::shared_ptr<Communicator>> make_in_process_world(int size, const InProcessOptions& options) {
  LN_CHECK(size >= 1, "[inprocess] a world needs at least one rank, got ", size);
  auto group = std::make_shared<Group>(size, std::make_shared<AbortState>(), options.timeout);
  std::vector<std::shared_ptr<Communicator>> comms;
  for (int r = 0; r < size; ++r) comms.push_back(std::make_shared<InProcessCommunicator>(group, r));
  return comms;
}

void run_in_process(int size, const std::function<void(Communicator& comm)>& fn, const InProcessOptions& options) {
  const auto comms = make_in_process_world(size, options);
  std::mutex mu;
  std::exception_ptr first;
  int first_rank = -1;
  std::string first_message;
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(*comms[r]);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mu);
        // The first failure is the cause; the others are usually the abort it triggered.
        if (!first) {
          first = std::current_exception();
          first_rank = r;
          first_message = e.what();
          comms[r]->abort(longnet::detail::concat("rank ", r, " failed: ", e.what()));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  if (first) LN_FAIL("[inprocess] rank ", first_rank, " of ", size, " failed: ", first_message);
}

}  // namespace longnet::dist
