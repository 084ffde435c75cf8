#include "framework/dist/nccl.h"

#include "framework/core/error.h"

#if defined(LONGNET_WITH_CUDA) && defined(LONGNET_WITH_NCCL)

#include <nccl.h>

#include <atomic>
#include <cstring>
#include <cstdio>
#include <list>
#include <mutex>
#include <thread>

#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/ops/factory.h"

/// Throws unless the NCCL call returns ncclSuccess, naming the statement and NCCL's reason.
#define LN_NCCL_CHECK(stmt)                                                                          \
  do {                                                                                               \
    const ncclResult_t ln_nccl_ = (stmt);                                                            \
    if (ln_nccl_ != ncclSuccess && ln_nccl_ != ncclInProgress)                                       \
      ::longnet::cuda::detail::fail("NCCL", #stmt, __FILE__, __LINE__, ncclGetErrorString(ln_nccl_)); \
  } while (0)

namespace longnet::dist {
namespace {

using Clock = std::chrono::steady_clock;

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    case DType::F16: return ncclFloat16;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::U8:
    case DType::Bool: return ncclUint8;
  }
  LN_FAIL("[nccl] unsupported dtype");
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  return ncclSum;
}

/// The communicator's shared state: the NCCL handle, its stream, the operations in flight, and the
/// watchdog that aborts the group when one fails or stalls.
class NcclGroup {
 public:
  NcclGroup(ncclComm_t comm, int device, int rank, NcclOptions options)
      : comm_(comm), device_(device), rank_(rank), options_(std::move(options)) {
    cuda::DeviceGuard guard(device_);
    LN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    watchdog_ = std::thread([this] { watch(); });
  }
  ~NcclGroup() {
    stop_ = true;
    watchdog_.join();
    cuda::DeviceGuard guard(device_);
    if (!aborted_) ncclCommDestroy(comm_);
    for (Pending& p : pending_) cudaEventDestroy(p.done);
    cudaStreamDestroy(stream_);
  }

  ncclComm_t comm() const { return comm_; }
  int device() const { return device_; }
  const NcclOptions& options() const { return options_; }

  void check_alive() const {
    if (aborted_) {
      std::lock_guard<std::mutex> lock(mu_);
      LN_FAIL("[nccl] rank ", rank_, ": the group was aborted: ", reason_);
    }
  }

  /// Runs `issue` on the communication stream after the compute stream's queued work; returns the
  /// event that marks its end.
  cudaEvent_t launch(const char* op, const std::function<void(cudaStream_t)>& issue) {
    check_alive();
    cuda::DeviceGuard guard(device_);
    cudaEvent_t ready, done;
    LN_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    LN_CUDA_CHECK(cudaEventRecord(ready, cuda::stream(device_)));
    LN_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    LN_CUDA_CHECK(cudaEventDestroy(ready));
    issue(stream_);
    // One event for the watchdog's list, one for the caller's Work: each is destroyed by its owner.
    LN_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    LN_CUDA_CHECK(cudaEventRecord(done, stream_));
    cudaEvent_t mine;
    LN_CUDA_CHECK(cudaEventCreateWithFlags(&mine, cudaEventDisableTiming));
    LN_CUDA_CHECK(cudaEventRecord(mine, stream_));
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back({op, Clock::now(), done});
    return mine;
  }

  /// Orders the compute stream after `done` (and releases it).
  void wait(cudaEvent_t done) {
    check_alive();
    cuda::DeviceGuard guard(device_);
    LN_CUDA_CHECK(cudaStreamWaitEvent(cuda::stream(device_), done, 0));
    LN_CUDA_CHECK(cudaEventDestroy(done));
  }

  void abort(const std::string& reason) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (aborted_) return;
      reason_ = reason;
      aborted_ = true;
    }
    std::fprintf(stderr, "[nccl] rank %d aborting the group: %s\n", rank_, reason.c_str());
    ncclCommAbort(comm_);
    if (options_.on_abort) options_.on_abort(reason);
  }

 private:
  struct Pending {
    const char* op;
    Clock::time_point start;
    cudaEvent_t done;
  };

  void watch() {
    cuda::DeviceGuard guard(device_);
    while (!stop_ && !aborted_) {
      std::this_thread::sleep_for(options_.poll);
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess && async != ncclInProgress) {
        abort(longnet::detail::concat("NCCL reported an asynchronous error: ", ncclGetErrorString(async)));
        break;
      }
      std::string stalled;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto it = pending_.begin(); it != pending_.end();) {
          if (cudaEventQuery(it->done) == cudaSuccess) {
            cudaEventDestroy(it->done);
            it = pending_.erase(it);
          } else {
            if (Clock::now() - it->start > options_.timeout && stalled.empty()) {
              stalled = longnet::detail::concat(it->op, " did not complete within ", options_.timeout.count(),
                                       " ms (a peer died, hangs, or called a different collective)");
            }
            ++it;
          }
        }
      }
      if (!stalled.empty()) abort(stalled);
    }
  }

  ncclComm_t comm_;
  int device_, rank_;
  NcclOptions options_;
  cudaStream_t stream_ = nullptr;
  mutable std::mutex mu_;
  std::list<Pending> pending_;
  std::string reason_;
  std::atomic<bool> aborted_{false}, stop_{false};
  std::thread watchdog_;
};

class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<NcclGroup> group, cudaEvent_t done, std::vector<Tensor> keep)
      : group_(std::move(group)), done_(done), keep_(std::move(keep)) {}
  ~NcclWork() override {
    if (done_) cudaEventDestroy(done_);
  }
  void wait() override {
    if (!done_) return;
    cudaEvent_t e = done_;
    done_ = nullptr;
    group_->wait(e);
    keep_.clear();
  }

 private:
  std::shared_ptr<NcclGroup> group_;
  cudaEvent_t done_;
  std::vector<Tensor> keep_;  // alive until the compute stream is ordered after the transfer
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<NcclGroup> group, int rank, int size)
      : group_(std::move(group)), rank_(rank), size_(size) {}

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    check_gpu("all_reduce", t);
    return launch("all_reduce", {t}, [&](cudaStream_t s) {
      LN_NCCL_CHECK(ncclAllReduce(t.raw_data(), t.raw_data(), t.numel(), nccl_type(t.dtype()), nccl_op(op),
                                  group_->comm(), s));
    });
  }

  std::shared_ptr<Work> all_gather_async(const Tensor& input, const Tensor& output) override {
    detail::check_scattered("all_gather", *this, output, input);
    check_gpu("all_gather", input);
    check_gpu("all_gather", output);
    return launch("all_gather", {input, output}, [&](cudaStream_t s) {
      LN_NCCL_CHECK(ncclAllGather(input.raw_data(), output.raw_data(), input.numel(), nccl_type(input.dtype()),
                                  group_->comm(), s));
    });
  }

  std::shared_ptr<Work> reduce_scatter_async(const Tensor& input, const Tensor& output, ReduceOp op) override {
    detail::check_scattered("reduce_scatter", *this, input, output);
    check_gpu("reduce_scatter", input);
    check_gpu("reduce_scatter", output);
    return launch("reduce_scatter", {input, output}, [&](cudaStream_t s) {
      LN_NCCL_CHECK(ncclReduceScatter(input.raw_data(), output.raw_data(), output.numel(), nccl_type(output.dtype()),
                                      nccl_op(op), group_->comm(), s));
    });
  }

  std::shared_ptr<Work> all_to_all_async(const Tensor& input, const Tensor& output) override {
    check_gpu("all_to_all", input);
    check_gpu("all_to_all", output);
    LN_CHECK(input.dtype() == output.dtype() && input.numel() == output.numel() && input.numel() % size_ == 0,
             "[all_to_all] input ", shape_str(input.shape()), " and output ", shape_str(output.shape()),
             " must match and split into ", size_, " equal pieces");
    return launch("all_to_all", {input, output}, [&](cudaStream_t s) {
      const int64_t piece = input.numel() / size_;
      const size_t bytes = piece * dtype_size(input.dtype());
      LN_NCCL_CHECK(ncclGroupStart());
      for (int j = 0; j < size_; ++j) {
        LN_NCCL_CHECK(ncclSend(static_cast<const char*>(input.raw_data()) + j * bytes, piece, nccl_type(input.dtype()),
                               j, group_->comm(), s));
        LN_NCCL_CHECK(ncclRecv(static_cast<char*>(output.raw_data()) + j * bytes, piece, nccl_type(output.dtype()), j,
                               group_->comm(), s));
      }
      LN_NCCL_CHECK(ncclGroupEnd());
    });
  }

  std::shared_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    check_gpu("broadcast", t);
    detail::check_peer("broadcast", *this, root);
    return launch("broadcast", {t}, [&](cudaStream_t s) {
      LN_NCCL_CHECK(ncclBroadcast(t.raw_data(), t.raw_data(), t.numel(), nccl_type(t.dtype()), root, group_->comm(), s));
    });
  }

  std::shared_ptr<Work> send_recv_async(const Tensor& send, int to, const Tensor& recv, int from) override {
    if (send.defined()) {
      check_gpu("send", send);
      detail::check_peer("send", *this, to);
    }
    if (recv.defined()) {
      check_gpu("recv", recv);
      detail::check_peer("recv", *this, from);
    }
    return launch("send_recv", {send, recv}, [&](cudaStream_t s) {
      LN_NCCL_CHECK(ncclGroupStart());
      if (send.defined()) {
        LN_NCCL_CHECK(ncclSend(send.raw_data(), send.numel(), nccl_type(send.dtype()), to, group_->comm(), s));
      }
      if (recv.defined()) {
        LN_NCCL_CHECK(ncclRecv(recv.raw_data(), recv.numel(), nccl_type(recv.dtype()), from, group_->comm(), s));
      }
      LN_NCCL_CHECK(ncclGroupEnd());
    });
  }

  void barrier() override {
    cuda::DeviceGuard guard(group_->device());
    Tensor one = zeros({1}, DType::F32, Device::cuda(group_->device()));
    all_reduce(one);
    LN_CUDA_CHECK(cudaStreamSynchronize(cuda::stream(group_->device())));
    group_->check_alive();
  }

  std::shared_ptr<Communicator> split(int color, int key) override {
    group_->check_alive();
    cuda::DeviceGuard guard(group_->device());
    ncclComm_t child = nullptr;
    LN_NCCL_CHECK(ncclCommSplit(group_->comm(), color < 0 ? NCCL_SPLIT_NOCOLOR : color, key, &child, nullptr));
    if (color < 0 || child == nullptr) return nullptr;
    int r = 0, n = 0;
    LN_NCCL_CHECK(ncclCommUserRank(child, &r));
    LN_NCCL_CHECK(ncclCommCount(child, &n));
    auto g = std::make_shared<NcclGroup>(child, group_->device(), r, group_->options());
    return std::make_shared<NcclCommunicator>(g, r, n);
  }

  void abort(const std::string& reason) override { group_->abort(reason); }

 private:
  void check_gpu(const char* op, const Tensor& t) const {
    detail::check_tensor(op, t, "tensor");
    LN_CHECK(t.device().is_cuda() && t.device().index == group_->device(), "[", op,
             "] the NCCL backend takes tensors on cuda:", group_->device(), ", got one on ", t.device().str());
  }

  std::shared_ptr<Work> launch(const char* op, std::vector<Tensor> keep, const std::function<void(cudaStream_t)>& issue) {
    const cudaEvent_t done = group_->launch(op, issue);
    return std::make_shared<NcclWork>(group_, done, std::move(keep));
  }

  std::shared_ptr<NcclGroup> group_;
  int rank_, size_;
};

}  // namespace

bool nccl_available() { return true; }

std::shared_ptr<Communicator> make_nccl_communicator(const LaunchInfo& info, const NcclOptions& options) {
  int devices = 0;
  LN_CUDA_CHECK(cudaGetDeviceCount(&devices));
  LN_CHECK(info.local_rank < devices, "[nccl] local rank ", info.local_rank, " needs a GPU of its own, this node has ",
           devices);
  cuda::DeviceGuard guard(info.local_rank);
  ncclUniqueId id{};
  if (info.rank == 0) LN_NCCL_CHECK(ncclGetUniqueId(&id));
  const std::string bytes = rendezvous_broadcast(
      info, std::string(reinterpret_cast<const char*>(&id), sizeof id), options.rendezvous_timeout);
  LN_CHECK(bytes.size() == sizeof id, "[nccl] the rendezvous gave ", bytes.size(), " bytes for a ", sizeof id,
           "-byte unique id");
  std::memcpy(&id, bytes.data(), sizeof id);
  ncclComm_t comm = nullptr;
  LN_NCCL_CHECK(ncclCommInitRank(&comm, info.world_size, id, info.rank));
  auto group = std::make_shared<NcclGroup>(comm, info.local_rank, info.rank, options);
  return std::make_shared<NcclCommunicator>(group, info.rank, info.world_size);
}

}  // namespace longnet::dist

#else

namespace longnet::dist {

bool nccl_available() { return false; }

std::shared_ptr<Communicator> make_nccl_communicator(const LaunchInfo&, const NcclOptions&) {
  LN_FAIL("[nccl] this build has no NCCL backend (configure with CUDA and NCCL)");
}

}  // namespace longnet::dist

#endif
