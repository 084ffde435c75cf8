#pragma once
// Collective communication between the ranks of a group, whatever carries it: NCCL for GPU
// tensors (one process per GPU) or the in-process backend (ranks as threads of one process, CPU
// tensors) on which every distributed algorithm is tested.
//
// Rules shared by all backends: every rank of a group calls the same collectives in the same order
// with tensors of the same shape and dtype; tensors are contiguous; an operation that cannot
// complete (a peer died, a timeout passed, the group was aborted) throws longnet::Error on every
// rank that waits on it instead of hanging.
#include <memory>
#include <string>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet::dist {

/// The reduction of all_reduce and reduce_scatter. Avg divides the sum by the group size.
enum class ReduceOp : uint8_t { Sum, Avg, Max, Min };

/// "sum", "avg", "max", "min".
const char* reduce_op_name(ReduceOp op);

/// A launched operation; wait() returns once its output may be read (on the GPU: once the compute
/// stream is ordered after it). wait() is idempotent; dropping a Work without waiting is an error
/// the backend may report late, so always wait.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

/// A group of ranks. Obtained from a backend (in-process world, NCCL init) or from split().
class Communicator {
 public:
  virtual ~Communicator() = default;

  /// This process's (or thread's) index in the group, 0 .. size() - 1.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// "inprocess" or "nccl".
  virtual std::string backend() const = 0;

  /// In place: t = op over the group of t.
  virtual std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) = 0;
  /// output (size * m, ...) receives every rank's input (m, ...), rank i's at rows i*m.. (i+1)*m.
  virtual std::shared_ptr<Work> all_gather_async(const Tensor& input, const Tensor& output) = 0;
  /// input (size * m, ...) reduced over the group; rank i keeps rows i*m .. (i+1)*m in output (m, ...).
  virtual std::shared_ptr<Work> reduce_scatter_async(const Tensor& input, const Tensor& output, ReduceOp op) = 0;
  /// input (size * m, ...): rows j*m .. (j+1)*m go to rank j; output (size * m, ...) receives rank
  /// i's piece for this rank at rows i*m .. (i+1)*m.
  virtual std::shared_ptr<Work> all_to_all_async(const Tensor& input, const Tensor& output) = 0;
  /// In place: every rank's t becomes root's t.
  virtual std::shared_ptr<Work> broadcast_async(const Tensor& t, int root) = 0;
  /// Sends `send` to rank `to` and receives `recv` from rank `from` as one step (either may be
  /// undefined to only receive or only send); the pattern of ring algorithms, free of deadlock.
  virtual std::shared_ptr<Work> send_recv_async(const Tensor& send, int to, const Tensor& recv, int from) = 0;
  /// Returns once every rank of the group has called it.
  virtual void barrier() = 0;
  /// A new group of the ranks that pass the same `color`, ordered by (key, rank); collective over
  /// this group. A negative color joins no group and gets null.
  virtual std::shared_ptr<Communicator> split(int color, int key) = 0;
  /// Makes every pending and future operation of this group (and of groups split from it) throw
  /// `reason` on every rank, so that one rank's failure stops all of them.
  virtual void abort(const std::string& reason) = 0;

  // Blocking forms.
  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::Sum) { all_reduce_async(t, op)->wait(); }
  void all_gather(const Tensor& input, const Tensor& output) { all_gather_async(input, output)->wait(); }
  void reduce_scatter(const Tensor& input, const Tensor& output, ReduceOp op = ReduceOp::Sum) {
    reduce_scatter_async(input, output, op)->wait();
  }
  void all_to_all(const Tensor& input, const Tensor& output) { all_to_all_async(input, output)->wait(); }
  void broadcast(const Tensor& t, int root) { broadcast_async(t, root)->wait(); }
  void send(const Tensor& t, int to) { send_recv_async(t, to, Tensor(), -1)->wait(); }
  void recv(const Tensor& t, int from) { send_recv_async(Tensor(), -1, t, from)->wait(); }
  void send_recv(const Tensor& send, int to, const Tensor& recv, int from) {
    send_recv_async(send, to, recv, from)->wait();
  }
};

/// A Work that is already complete.
std::shared_ptr<Work> completed_work();

namespace detail {
/// Checks shared by the backends; `op` names the collective in the message.
void check_tensor(const char* op, const Tensor& t, const char* what);
/// Checks that `big` has size() * `small`'s rows and otherwise its shape and dtype.
void check_scattered(const char* op, const Communicator& comm, const Tensor& big, const Tensor& small);
void check_peer(const char* op, const Communicator& comm, int peer);
/// dst = dst (op) src elementwise over `n` elements of `dtype` (f32, f64, bf16, f16, i32, i64).
void reduce_into(void* dst, const void* src, int64_t n, DType dtype, ReduceOp op);
/// dst /= divisor elementwise (the last step of Avg).
void divide_in_place(void* dst, int64_t n, DType dtype, int64_t divisor);
}  // namespace detail

}  // namespace longnet::dist
