// GPU timing of the attention cores in bf16 on cuda:0, called as users call them (inputs with
// requires_grad, outputs from the stream-ordered pool), against PyTorch run in the same job:
// - dense causal attention, our attention() op (cuDNN's fused kernel where it applies, and our own
//   kernel forced): forward and backward TFLOP/s, next to
//   torch.nn.functional.scaled_dot_product_attention (its default backend, and cuDNN's);
// - the dilated core with the paper's schedule: forward+backward time, effective TFLOP/s (the
//   FLOPs of the attended pairs only) and peak memory, next to bench/pytorch/longnet_reference.py;
// - the block-sparse core at 90% sparsity: effective TFLOP/s against our own dense kernel.
// Times are medians of CUDA-event intervals on the framework's stream after warm-up runs, ungated
// (each run is issued as the host gets to it), as PyTorch's are timed by the reference script.
#include "tools/longnet/bench_attention_time.h"

#include <cstdio>

#include "tools/longnet/bench_timing.h"
#include "tools/longnet/bench_torch.h"

#ifdef LONGNET_WITH_CUDA
#include <algorithm>
#include <optional>
#include <vector>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/storage.h"
#include "framework/cuda/context.h"
#include "framework/cuda/runtime.h"
#include "framework/ops/attention.h"
#include "framework/ops/factory.h"
#include "layers/attention/core.h"
#endif

namespace longnet::tools {
namespace {

#ifdef LONGNET_WITH_CUDA

constexpr int kDevice = 0;
constexpr int kWarmup = 3;
constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kBackwardFactor = 2.5;  // backward FLOPs per forward FLOP (five products vs two)
constexpr int64_t kDilatedHeads = 12, kDilatedHeadDim = 64;
const std::vector<int64_t> kSegments{2048, 4096, 8192, 16384, 32768};
const std::vector<int64_t> kDilations{1, 2, 4, 6, 12};

Device gpu() { return Device::cuda(kDevice); }

struct DenseCase {
  int64_t n, heads, head_dim;
  int64_t batch = 1;
};

// Forward FLOPs of dense attention: two products of 2 N^2 D per head, half the pairs when causal.
double dense_forward_flops(const DenseCase& c, bool causal) {
  const double n = static_cast<double>(c.n);
  return 4.0 * static_cast<double>(c.heads) * n * n * static_cast<double>(c.head_dim) * (causal ? 0.5 : 1.0);
}

// Forward FLOPs of the pairs the dilated core computes (B = 1): per branch and head, each segment
// of w rows keeps the rows at offset head mod r, ..., which attend densely to each other.
double dilated_forward_flops(int64_t n, int64_t heads, int64_t head_dim, bool causal) {
  double pairs = 0.0;
  for (size_t b = 0; b < kSegments.size(); ++b) {
    const int64_t w = std::min(kSegments[b], n), r = kDilations[b], full = n / w, tail = n % w;
    const auto rows = [r](int64_t length, int64_t g) { return g < length ? (length - g + r - 1) / r : 0; };
    for (int64_t h = 0; h < heads; ++h) {
      const double m = static_cast<double>(rows(w, h % r)), t = static_cast<double>(rows(tail, h % r));
      pairs += static_cast<double>(full) * m * m + t * t;
    }
  }
  return 4.0 * pairs * static_cast<double>(head_dim) * (causal ? 0.5 : 1.0);
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// ---- PyTorch, through the reference script

TorchScript torch_script(const AttentionTimeOptions& o) { return {o.python, o.script}; }

std::string run_torch(const AttentionTimeOptions& o, const std::string& args) {
  return run_torch_script(torch_script(o), args, "bench attention");
}

// SDPA forward and backward ms of one dense case with one backend (absent when it failed).
struct TorchDense {
  std::optional<double> fwd_ms, bwd_ms;
};

TorchDense torch_dense(const AttentionTimeOptions& o, const DenseCase& c, const std::string& backend) {
  const std::string line =
      run_torch(o, "--dense --causal --n " + std::to_string(c.n) + " --heads " + std::to_string(c.heads) +
                       " --head-dim " + std::to_string(c.head_dim) + " --batch 1 --backend " + backend +
                       " --reps " + std::to_string(o.reps) + " --warmup " + std::to_string(kWarmup));
  return {json_number(line, "fwd_ms"), json_number(line, "bwd_ms")};
}

struct TorchDilated {
  std::optional<double> ms, peak_bytes;
};

TorchDilated torch_dilated(const AttentionTimeOptions& o, int64_t n) {
  const std::string line = run_torch(
      o, "--causal --n " + std::to_string(n) + " --heads " + std::to_string(kDilatedHeads) + " --head-dim " +
             std::to_string(kDilatedHeadDim) + " --batch 1 --segments " + join(kSegments) + " --dilations " +
             join(kDilations) + " --reps " + std::to_string(o.reps) + " --warmup " + std::to_string(kWarmup));
  return {json_number(line, "fwd_bwd_ms"), json_number(line, "peak_bytes")};
}

// ---- ours

Tensor bf16_input(int64_t n, int64_t heads, int64_t head_dim, bool requires_grad, int64_t batch = 1) {
  Tensor t = randn({batch, n, heads, head_dim}, DType::BF16, gpu());
  if (requires_grad) t.requires_grad_();
  return t;
}

EventTiming timing(int reps) { return {kDevice, reps, kWarmup, 1, false}; }

struct DenseTimes {
  double fwd_ms, bwd_ms;
};

// Our attention() op with `kernel`: the forward as training runs it (recorded), and the backward
// of one recorded forward as the engine calls it (no lse gradient).
DenseTimes our_dense(const DenseCase& c, int reps, AttentionKernel kernel, bool causal = true) {
  AttentionKernelScope choice(kernel);
  const Tensor q = bf16_input(c.n, c.heads, c.head_dim, true, c.batch),
               k = bf16_input(c.n, c.heads, c.head_dim, true, c.batch),
               v = bf16_input(c.n, c.heads, c.head_dim, true, c.batch),
               dout = bf16_input(c.n, c.heads, c.head_dim, false, c.batch);
  AttentionParams p;
  p.causal = causal;
  const double fwd = timed_median_ms([&](int) { attention(q, k, v, p); }, timing(reps));
  const AttentionOutput recorded = attention(q, k, v, p);
  const std::shared_ptr<autograd::Node> node = recorded.out.grad_fn();
  const double bwd = timed_median_ms(
      [&](int) {
        NoGradGuard no_grad;  // as the engine runs backward
        node->apply(std::vector<Tensor>{dout, Tensor()});
      },
      timing(reps));
  return {fwd, bwd};
}

struct DilatedTimes {
  double ms;
  int64_t peak_bytes;
};

// The dilated core, causal, paper schedule: forward then backward through the engine from out.
DilatedTimes our_dilated(int64_t n, int reps) {
  AttentionConfig config;
  config.segment_lengths = kSegments;
  config.dilation_rates = kDilations;
  const std::unique_ptr<AttentionCore> core = make_attention_core("dilated", config);
  const Tensor q = bf16_input(n, kDilatedHeads, kDilatedHeadDim, true),
               k = bf16_input(n, kDilatedHeads, kDilatedHeadDim, true),
               v = bf16_input(n, kDilatedHeads, kDilatedHeadDim, true),
               dout = bf16_input(n, kDilatedHeads, kDilatedHeadDim, false);
  AttentionOptions options;
  options.causal = true;
  const auto step = [&](int) {
    const AttentionResult r = core->forward(q, k, v, options);
    r.out.backward(dout);
    for (const Tensor& t : {q, k, v}) t.set_grad(Tensor());
  };
  const double ms = timed_median_ms(step, timing(reps));
  cuda::synchronize(kDevice);
  reset_peak_memory(gpu());
  step(0);
  cuda::synchronize(kDevice);
  return {ms, memory_stats(gpu()).peak_bytes};
}

// The block-sparse core with a local window of `window` blocks on each side, not causal: forward
// and backward times as for dense.
DenseTimes our_block_sparse(const DenseCase& c, int64_t block, int64_t window, int reps) {
  AttentionConfig config;
  config.block_size = block;
  config.pattern.kind = "local";
  config.pattern.window = window;
  const std::unique_ptr<AttentionCore> core = make_attention_core("block_sparse", config);
  const Tensor q = bf16_input(c.n, c.heads, c.head_dim, true), k = bf16_input(c.n, c.heads, c.head_dim, true),
               v = bf16_input(c.n, c.heads, c.head_dim, true), dout = bf16_input(c.n, c.heads, c.head_dim, false);
  const AttentionOptions options;
  const double fwd = timed_median_ms([&](int) { core->forward(q, k, v, options); }, timing(reps));
  const AttentionResult recorded = core->forward(q, k, v, options);
  const std::shared_ptr<autograd::Node> node = recorded.out.grad_fn();
  const double bwd = timed_median_ms(
      [&](int) {
        NoGradGuard no_grad;
        node->apply(std::vector<Tensor>{dout, Tensor()});
      },
      timing(reps));
  return {fwd, bwd};
}

// ---- report

std::string cell(const std::optional<double>& v, const char* format) {
  if (!v) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, *v);
  return buf;
}

std::optional<double> tflops(double flops, const std::optional<double>& ms) {
  if (!ms || *ms <= 0.0) return std::nullopt;
  return flops / (*ms * 1e-3) * 1e-12;
}

std::optional<double> ratio(const std::optional<double>& a, const std::optional<double>& b) {
  if (!a || !b || *b <= 0.0) return std::nullopt;
  return *a / *b;
}

int run(const AttentionTimeOptions& o) {
  if (cuda::device_count() == 0) {
    std::fprintf(stderr, "bench attention --time: no CUDA device is visible to this process; it needs a GPU\n");
    return 1;
  }
  const std::vector<DenseCase> dense =
      o.quick ? std::vector<DenseCase>{{2048, 12, 64}, {4096, 16, 128}}
              : std::vector<DenseCase>{{8192, 12, 64}, {32768, 12, 64}, {8192, 16, 128}, {32768, 16, 128}};
  std::vector<int64_t> dilated_n = o.quick ? std::vector<int64_t>{8192} : std::vector<int64_t>{32768};
  if (o.long_seqs) dilated_n.insert(dilated_n.end(), {131072, 262144, 524288, 1048576});

  std::printf("## Attention on %s, bf16, causal\n\n", cuda::properties(kDevice).name);
  std::printf("Median of %d CUDA-event timed runs after %d warm-up runs, ours and PyTorch's alike; B = 1. "
              "Dense FLOPs: forward 4 H N^2 D / 2 (causal), backward 2.5x forward. Dilated: the paper's schedule "
              "w = {%s}, r = {%s}, H = %lld, D = %lld; effective TFLOP/s count only the attended pairs "
              "(3.5x their forward FLOPs for forward+backward), also as a share of dense causal forward+backward "
              "TFLOP/s at D = %lld and the largest dense N (ours, and cuDNN's through torch). Peak: the allocator's "
              "high-water mark over one forward+backward, inputs included (PyTorch: "
              "torch.cuda.max_memory_allocated).\n\n",
              o.reps, kWarmup, join(kSegments).c_str(), join(kDilations).c_str(),
              static_cast<long long>(kDilatedHeads), static_cast<long long>(kDilatedHeadDim),
              static_cast<long long>(kDilatedHeadDim));
  // PyTorch first, so that neither process holds pool memory the other needs.
  const bool torch = torch_available(torch_script(o), o.no_torch);
  std::vector<TorchDense> sdpa_default(dense.size()), sdpa_cudnn(dense.size());
  std::vector<TorchDilated> reference(dilated_n.size());
  if (torch) {
    for (size_t i = 0; i < dense.size(); ++i) {
      sdpa_default[i] = torch_dense(o, dense[i], "default");
      sdpa_cudnn[i] = torch_dense(o, dense[i], "cudnn");
    }
    for (size_t i = 0; i < dilated_n.size(); ++i) reference[i] = torch_dilated(o, dilated_n[i]);
  }

  std::printf("### Dense causal attention: our attention() vs torch SDPA\n\n");
  std::printf("Ours: the op as it runs by default (cuDNN's fused kernel for these calls); own kernel: ours "
              "forced (what block-sparse layouts, padding masks and lse gradients run on).\n\n");
  std::printf("| N | H | D | pass | ours ms | ours TFLOP/s | own kernel TFLOP/s | SDPA default TFLOP/s | "
              "SDPA cuDNN TFLOP/s | ours / SDPA cuDNN |\n");
  std::printf("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
  // Dense forward+backward TFLOP/s at the dilated head dim and the largest N: ours and cuDNN's.
  std::optional<double> dense64_ours, dense64_cudnn;
  for (size_t i = 0; i < dense.size(); ++i) {
    const DenseCase& c = dense[i];
    const DenseTimes t = our_dense(c, o.reps, AttentionKernel::Auto);
    const DenseTimes own = our_dense(c, o.reps, AttentionKernel::Own);
    const double f = dense_forward_flops(c, true);
    for (int pass = 0; pass < 2; ++pass) {
      const double flops = pass == 0 ? f : kBackwardFactor * f;
      const double ms = pass == 0 ? t.fwd_ms : t.bwd_ms;
      const auto ours = tflops(flops, ms);
      const auto own_tflops = tflops(flops, pass == 0 ? own.fwd_ms : own.bwd_ms);
      const auto def = tflops(flops, pass == 0 ? sdpa_default[i].fwd_ms : sdpa_default[i].bwd_ms);
      const auto cudnn = tflops(flops, pass == 0 ? sdpa_cudnn[i].fwd_ms : sdpa_cudnn[i].bwd_ms);
      std::printf("| %lld | %lld | %lld | %s | %.3f | %s | %s | %s | %s | %s |\n", static_cast<long long>(c.n),
                  static_cast<long long>(c.heads), static_cast<long long>(c.head_dim), pass == 0 ? "fwd" : "bwd", ms,
                  cell(ours, "%.1f").c_str(), cell(own_tflops, "%.1f").c_str(), cell(def, "%.1f").c_str(),
                  cell(cudnn, "%.1f").c_str(), cell(ratio(ours, cudnn), "%.2f").c_str());
      std::fflush(stdout);
    }
    if (c.head_dim == kDilatedHeadDim) {
      const double both = (1.0 + kBackwardFactor) * f;
      dense64_ours = tflops(both, t.fwd_ms + t.bwd_ms);
      const auto& cd = sdpa_cudnn[i];
      dense64_cudnn = cd.fwd_ms && cd.bwd_ms ? tflops(both, *cd.fwd_ms + *cd.bwd_ms) : std::nullopt;
    }
  }

  std::printf("\n### Dilated attention (paper schedule), forward+backward: ours vs the PyTorch reference\n\n");
  std::printf("| N | ours ms | ours eff. TFLOP/s | / our dense | / cuDNN dense | ours peak MiB | PyTorch ms | "
              "PyTorch eff. TFLOP/s | PyTorch peak MiB | PyTorch ms / ours |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (size_t i = 0; i < dilated_n.size(); ++i) {
    const int64_t n = dilated_n[i];
    const DilatedTimes t = our_dilated(n, o.reps);
    const double flops = (1.0 + kBackwardFactor) * dilated_forward_flops(n, kDilatedHeads, kDilatedHeadDim, true);
    const auto ours = tflops(flops, t.ms);
    const TorchDilated& ref = reference[i];
    const std::optional<double> ref_mib =
        ref.peak_bytes ? std::optional<double>(*ref.peak_bytes / kMiB) : std::nullopt;
    std::printf("| %lld | %.3f | %s | %s | %s | %.0f | %s | %s | %s | %s |\n", static_cast<long long>(n), t.ms,
                cell(ours, "%.1f").c_str(), cell(ratio(ours, dense64_ours), "%.2f").c_str(),
                cell(ratio(ours, dense64_cudnn), "%.2f").c_str(),
                static_cast<double>(t.peak_bytes) / kMiB, cell(ref.ms, "%.3f").c_str(),
                cell(tflops(flops, ref.ms), "%.1f").c_str(), cell(ref_mib, "%.0f").c_str(),
                cell(ratio(ref.ms, t.ms), "%.2f").c_str());
    std::fflush(stdout);
  }

  // Where the dilated time goes: each branch's attention alone, as the batch of gathered segments
  // the core hands to the fused kernel (gathers, merge and sums excluded).
  const int64_t bn = dilated_n.back();
  std::printf("\nBranches at N = %lld alone, as dense causal batches (B = N / w segments of ceil(w / r) rows):\n\n",
              static_cast<long long>(bn));
  std::printf("| w | r | batch | rows | fwd ms | bwd ms | fwd+bwd TFLOP/s |\n|---:|---:|---:|---:|---:|---:|---:|\n");
  double branch_ms = 0.0;
  for (size_t i = 0; i < kSegments.size(); ++i) {
    const int64_t w = std::min(kSegments[i], bn), r = kDilations[i];
    const DenseCase bc{(w + r - 1) / r, kDilatedHeads, kDilatedHeadDim, bn / w};
    const DenseTimes t = our_dense(bc, o.reps, AttentionKernel::Auto);
    const double f = static_cast<double>(bc.batch) * dense_forward_flops(bc, true);
    branch_ms += t.fwd_ms + t.bwd_ms;
    std::printf("| %lld | %lld | %lld | %lld | %.3f | %.3f | %s |\n", static_cast<long long>(w),
                static_cast<long long>(r), static_cast<long long>(bc.batch), static_cast<long long>(bc.n), t.fwd_ms,
                t.bwd_ms, cell(tflops((1.0 + kBackwardFactor) * f, t.fwd_ms + t.bwd_ms), "%.1f").c_str());
  }
  std::printf("\nBranches alone: %.3f ms of the core's forward+backward at this N (the rest: gathers, merge, "
              "gradient sums, the engine).\n", branch_ms);

  // Block-sparse: a local window of 12 blocks each side keeps 25 of the 256 key blocks per query
  // block at N = 32K (90.2% sparsity), against our own dense kernel on the same shape, not causal.
  const DenseCase bs = o.quick ? DenseCase{8192, 12, 64} : DenseCase{32768, 12, 64};
  const int64_t block = 128, window = o.quick ? 3 : 12, blocks = bs.n / block;
  double kept = 0.0;
  for (int64_t i = 0; i < blocks; ++i) kept += static_cast<double>(std::min(blocks - 1, i + window) - std::max<int64_t>(0, i - window) + 1);
  const double density = kept / static_cast<double>(blocks * blocks);
  const DenseTimes sparse = our_block_sparse(bs, block, window, o.reps);
  const DenseTimes dense_own = our_dense(bs, o.reps, AttentionKernel::Own, false);
  const double full = dense_forward_flops(bs, false);
  std::printf("\n### Block-sparse attention (local window, block %lld, %.1f%% sparsity) vs our own dense kernel, "
              "not causal\n\n", static_cast<long long>(block), 100.0 * (1.0 - density));
  std::printf("| N | H | D | pass | block-sparse ms | eff. TFLOP/s | own dense ms | own dense TFLOP/s | ratio |\n");
  std::printf("|---:|---:|---:|---|---:|---:|---:|---:|---:|\n");
  for (int pass = 0; pass < 2; ++pass) {
    const double factor = pass == 0 ? 1.0 : kBackwardFactor;
    const double sparse_ms = pass == 0 ? sparse.fwd_ms : sparse.bwd_ms, dense_ms = pass == 0 ? dense_own.fwd_ms : dense_own.bwd_ms;
    const auto eff = tflops(factor * full * density, sparse_ms), dense_t = tflops(factor * full, dense_ms);
    std::printf("| %lld | %lld | %lld | %s | %.3f | %s | %.3f | %s | %s |\n", static_cast<long long>(bs.n),
                static_cast<long long>(bs.heads), static_cast<long long>(bs.head_dim), pass == 0 ? "fwd" : "bwd",
                sparse_ms, cell(eff, "%.1f").c_str(), dense_ms, cell(dense_t, "%.1f").c_str(),
                cell(ratio(eff, dense_t), "%.2f").c_str());
  }
  return 0;
}

#else

int run(const AttentionTimeOptions&) {
  std::fprintf(stderr, "bench attention --time: this build has no CUDA backend (configure with -DLONGNET_CUDA=ON)\n");
  return 1;
}

#endif

}  // namespace

std::shared_ptr<AttentionTimeOptions> add_attention_time_options(CLI::App* sub) {
  auto o = std::make_shared<AttentionTimeOptions>();
  sub->add_flag("--time", o->time, "Time the cores on the GPU (bf16) against PyTorch, as markdown tables");
  sub->add_flag("--quick", o->quick, "--time: small sizes (smoke test)");
  sub->add_flag("--long", o->long_seqs, "--time: dilated also at N = 128K, 256K, 512K and 1M");
  sub->add_option("--reps", o->reps, "--time: timed runs per case (median)")->check(CLI::Range(3, 100000));
  sub->add_flag("--no-torch", o->no_torch, "--time: skip the PyTorch runs");
  sub->add_option("--python", o->python, "--time: Python interpreter with torch");
  sub->add_option("--torch-script", o->script, "--time: the PyTorch reference script");
  return o;
}

int run_attention_time(const AttentionTimeOptions& options) { return run(options); }

}  // namespace longnet::tools
