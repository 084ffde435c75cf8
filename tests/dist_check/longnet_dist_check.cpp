// longnet_dist_check: the NCCL checks that need several GPU processes. Run with
//   mpirun -np 2 build/tests/longnet_dist_check            (equalities)
//   mpirun -np 2 build/tests/longnet_dist_check --kill     (rank 1 dies; every rank must stop)
// or with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT from another launcher. Exit status 0 means every
// check passed (for --kill: the surviving ranks exit non-zero with a message within the timeout).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <unistd.h>

#include "framework/cuda/context.h"
#include "framework/dist/nccl.h"
#include "framework/ops/ops.h"
#include "layers/parallel/sequence_parallel.h"

namespace longnet {
namespace {

int failures = 0;

void expect(bool ok, int rank, const std::string& what) {
  std::printf("[rank %d] %s: %s\n", rank, ok ? "ok" : "FAILED", what.c_str());
  if (!ok) ++failures;
}

double max_rel_error(const Tensor& a, const Tensor& b) {
  const auto x = a.to(Device::cpu()).to(DType::F64).to_vector<double>();
  const auto y = b.to(Device::cpu()).to(DType::F64).to_vector<double>();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num = std::max(num, std::abs(x[i] - y[i]));
    den = std::max(den, std::abs(y[i]));
  }
  return num / std::max(den, 1e-12);
}

void collectives(dist::Communicator& comm, Device dev) {
  const int r = comm.rank(), p = comm.size();
  Tensor t = full({1000}, r + 1.0, DType::F32, dev);
  comm.all_reduce(t);
  expect(t.to(Device::cpu()).to_vector<float>()[999] == p * (p + 1) / 2.0f, r, "all_reduce sum");
  Tensor g = Tensor::empty({p, 3}, DType::F32, dev);
  comm.all_gather(full({1, 3}, r, DType::F32, dev), g);
  expect(g.to(Device::cpu()).to_vector<float>()[3 * (p - 1)] == p - 1, r, "all_gather");
  Tensor got = Tensor::empty({4}, DType::F32, dev);
  comm.send_recv(full({4}, r, DType::F32, dev), (r + 1) % p, got, (r + p - 1) % p);
  expect(got.to(Device::cpu()).to_vector<float>()[0] == (r + p - 1) % p, r, "send_recv ring");
  Tensor s = Tensor::empty({1}, DType::F32, dev);
  comm.reduce_scatter(full({p}, 1.0, DType::F32, dev), s);
  expect(s.to(Device::cpu()).to_vector<float>()[0] == p, r, "reduce_scatter");
  comm.barrier();
}

/// Each parallel core on the GPU against the single-process core on the whole sequence (bf16).
void attention_cores(dist::Communicator& comm, Device dev) {
  register_parallel_attention_cores();
  const int r = comm.rank(), p = comm.size();
  AttentionConfig config;
  config.segment_lengths = {512, 2048};
  config.dilation_rates = {1, 2};
  struct Case {
    const char* core;
    const char* reference;
  };
  for (const Case& c : {Case{"ring", "dense"}, Case{"dilated_parallel", "dilated"}, Case{"head_parallel", "dilated"}}) {
    Generator gen(7);
    const Tensor q = randn({1, 2048, 8, 64}, DType::F32, Device::cpu(), &gen).to(dev).to(DType::BF16);
    const Tensor k = randn({1, 2048, 8, 64}, DType::F32, Device::cpu(), &gen).to(dev).to(DType::BF16);
    const Tensor v = randn({1, 2048, 8, 64}, DType::F32, Device::cpu(), &gen).to(dev).to(DType::BF16);
    AttentionOptions options;
    options.causal = true;
    const AttentionResult want = make_attention_core(c.reference, config)->forward(q, k, v, options);
    SequenceParallelScope scope(comm);
    const auto shard = [&](const Tensor& t) { return shard_sequence(t, 1, r, p).contiguous(); };
    const AttentionResult got = make_attention_core(c.core, config)->forward(shard(q), shard(k), shard(v), options);
    const double err = max_rel_error(got.out, shard(want.out));
    expect(err < 3e-2, r, std::string(c.core) + " equals " + c.reference + " (max relative error " + std::to_string(err) + ")");
  }
}

int run(int argc, char** argv) {
  const bool kill = argc > 1 && std::strcmp(argv[1], "--kill") == 0;
  const dist::LaunchInfo info = dist::launch_info_from_env();
  dist::NcclOptions options;
  options.timeout = std::chrono::seconds(kill ? 10 : 120);
  options.on_abort = [&](const std::string& reason) {
    std::fprintf(stderr, "[rank %d] stopping: %s\n", info.rank, reason.c_str());
    std::fflush(stderr);
    ::_exit(kill ? 3 : 2);
  };
  auto comm = dist::make_nccl_communicator(info, options);
  const Device dev = Device::cuda(info.local_rank);
  DefaultDeviceGuard device(dev);
  collectives(*comm, dev);
  if (kill) {
    if (comm->rank() == 1) {
      std::fprintf(stderr, "[rank 1] dying on purpose\n");
      ::_exit(9);
    }
    // The peer is gone: this all-reduce never completes, and the watchdog must end the process.
    Tensor t = full({1}, 1.0, DType::F32, dev);
    comm->all_reduce(t);
    cudaStreamSynchronize(cuda::stream(dev.index));
    std::fprintf(stderr, "[rank %d] FAILED: the collective with a dead peer returned\n", comm->rank());
    return 1;
  }
  attention_cores(*comm, dev);
  std::printf("[rank %d] %s\n", comm->rank(), failures == 0 ? "all checks passed" : "checks FAILED");
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace longnet

int main(int argc, char** argv) {
  try {
    return longnet::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
