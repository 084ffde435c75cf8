// GPU benchmark of the memory-bound ops, called as users call them: framework ops on tensors on
// cuda:0 (bf16 unless noted), outputs from the stream-ordered pool. Each case reports the fewest
// bytes the op must move (each input read once, each output written once), its median time and
// GB/s, and the GB/s of a device-to-device copy of the same number of bytes timed in the same run:
// the share of the copy's bandwidth an op reaches is how close it is to the memory's limit.
#include "tools/longnet/bench_ops.h"

#include <cstdio>
#include <memory>

#include "tools/longnet/bench_timing.h"
#include "tools/longnet/registry.h"

#ifdef LONGNET_WITH_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/runtime.h"
#include "framework/ops/copy.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"
#include "framework/ops/loss.h"
#include "framework/ops/norm.h"
#include "framework/ops/optim_update.h"
#include "framework/ops/rotary.h"
#include "framework/ops/softmax.h"
#include "framework/ops/view.h"
#endif

namespace longnet::tools {
namespace {

struct OpsBenchOptions {
  int reps = 50;       // timed runs per case (after warm-up)
  bool quick = false;  // smaller shapes
};

#ifdef LONGNET_WITH_CUDA

constexpr int kDevice = 0;
constexpr int kWarmup = 5;
constexpr int kMaxSets = 3;                         // buffer sets for cases that L2 could hold
constexpr int64_t kRandomBlock = int64_t{1} << 20;  // random values repeated over every buffer
constexpr double kMiB = 1024.0 * 1024.0;

Device gpu() { return Device::cuda(kDevice); }

// One timed call of a case on buffer set `set`.
using Run = std::function<void(int set)>;

struct Case {
  std::string op;
  Shape shape;
  std::string dtype;
  double bytes = 0;     // fewest bytes moved: each input read once, each output written once
  std::string note;
  bool gated = true;    // false for ops that read a result back to the host
  std::function<Run(int sets)> make;  // allocates `sets` operand sets; the Run owns them
};

// t (contiguous) filled with copies of `block`: drawing gigabytes of random values on the host
// would take longer than the benchmark, and repeated values cost a memory-bound op nothing.
Tensor random_on_gpu(const Shape& shape, DType dtype, const Tensor& block) {
  NoGradGuard no_grad;
  Tensor t = Tensor::empty(shape, dtype, gpu());
  const int64_t n = t.numel(), b = block.numel(), whole = n / b, rest = n % b;
  const Tensor flat = t.view({n});
  if (whole > 0) copy_(flat.narrow(0, 0, whole * b).view({whole, b}), block);
  if (rest > 0) copy_(flat.narrow(0, whole * b, rest), block.narrow(0, 0, rest));
  return t;
}

// Buffer sets a case rotates among: enough that no run finds its operands left in L2 by the
// run before, unless they are far larger than L2 anyway.
int sets_for(double bytes) {
  const double l2 = static_cast<double>(cuda::properties(kDevice).l2CacheSize);
  return bytes >= 4.0 * l2 ? 1 : kMaxSets;
}

double median_ms(const Run& run, int sets, int reps, bool gated) {
  return timed_median_ms(run, {kDevice, reps, kWarmup, sets, gated});
}

// Median ms of a device-to-device cudaMemcpyAsync moving `moved` bytes (half read, half written).
double copy_ms(double moved, int sets, int reps) {
  const int64_t n = static_cast<int64_t>(moved / 2.0) / 16 * 16;
  std::vector<Tensor> src, dst;
  for (int s = 0; s < sets; ++s) {
    src.push_back(zeros({n}, DType::U8, gpu()));
    dst.push_back(Tensor::empty({n}, DType::U8, gpu()));
  }
  const Run run = [&](int s) {
    LN_CUDA_CHECK(cudaMemcpyAsync(dst[static_cast<size_t>(s)].raw_data(), src[static_cast<size_t>(s)].raw_data(),
                                  static_cast<size_t>(n), cudaMemcpyDeviceToDevice, cuda::stream(kDevice)));
  };
  return median_ms(run, sets, reps, true);
}

double elements(const Shape& shape) { return static_cast<double>(numel_of(shape)); }

// Runs, on set s, the backward of the node make_node() recorded, with a random upstream gradient
// of `shape` in bf16, as the engine calls it.
std::function<Run(int sets)> node_backward(const Shape& shape, const Tensor& block,
                                           std::function<std::shared_ptr<autograd::Node>()> make_node) {
  return [shape, block, make_node](int sets) -> Run {
    std::vector<std::shared_ptr<autograd::Node>> nodes;
    std::vector<Tensor> dy;
    for (int s = 0; s < sets; ++s) {
      nodes.push_back(make_node());
      dy.push_back(random_on_gpu(shape, DType::BF16, block));
    }
    return [nodes, dy](int s) {
      NoGradGuard no_grad;  // as the engine runs backward
      nodes[static_cast<size_t>(s)]->apply(std::vector<Tensor>{dy[static_cast<size_t>(s)]});
    };
  };
}

Case add_case(const Shape& shape, const Tensor& block) {
  Case c{"add", shape, "bf16", 3.0 * 2.0 * elements(shape), "a + b: two inputs, one output", true, nullptr};
  c.make = [shape, block](int sets) -> Run {
    std::vector<Tensor> a, b;
    for (int s = 0; s < sets; ++s) {
      a.push_back(random_on_gpu(shape, DType::BF16, block));
      b.push_back(random_on_gpu(shape, DType::BF16, block));
    }
    return [a, b](int s) {
      NoGradGuard no_grad;
      add(a[static_cast<size_t>(s)], b[static_cast<size_t>(s)]);
    };
  };
  return c;
}

Case gelu_case(const Shape& shape, const Tensor& block) {
  Case c{"gelu forward", shape, "bf16", 2.0 * 2.0 * elements(shape), "erf form", true, nullptr};
  c.make = [shape, block](int sets) -> Run {
    std::vector<Tensor> x;
    for (int s = 0; s < sets; ++s) x.push_back(random_on_gpu(shape, DType::BF16, block));
    return [x](int s) {
      NoGradGuard no_grad;
      gelu(x[static_cast<size_t>(s)]);
    };
  };
  return c;
}

Case gelu_backward_case(const Shape& shape, const Tensor& block) {
  // dy and x in, dx out.
  Case c{"gelu backward", shape, "bf16", 3.0 * 2.0 * elements(shape),
         "erf form; the recorded node's backward as the engine calls it", true, nullptr};
  c.make = node_backward(shape, block,
                         [shape, block] { return gelu(random_on_gpu(shape, DType::BF16, block).requires_grad_()).grad_fn(); });
  return c;
}

Case sum_to_case(const Shape& shape, const Tensor& block) {
  // The gradient in, one row of sums out: a bias gradient (broadcast over every leading dim).
  const Shape to = {shape.back()};
  Case c{"sum_to", shape, "bf16", 2.0 * (elements(shape) + elements(to)),
         "to " + shape_str(to) + ": leading dims summed, f32 accumulation", true, nullptr};
  c.make = [shape, to, block](int sets) -> Run {
    std::vector<Tensor> g;
    for (int s = 0; s < sets; ++s) g.push_back(random_on_gpu(shape, DType::BF16, block));
    return [g, to](int s) {
      NoGradGuard no_grad;
      sum_to(g[static_cast<size_t>(s)], to);
    };
  };
  return c;
}

// LayerNorm operands of one set: x (rows, d), weight and bias (d).
struct NormSet {
  Tensor x, w, b;
};

NormSet norm_set(const Shape& shape, const Tensor& block, bool requires_grad) {
  NormSet n{random_on_gpu(shape, DType::BF16, block), random_on_gpu({shape[1]}, DType::BF16, block),
            random_on_gpu({shape[1]}, DType::BF16, block)};
  if (requires_grad) {
    n.x.requires_grad_();
    n.w.requires_grad_();
    n.b.requires_grad_();
  }
  return n;
}

Case layer_norm_forward_case(const Shape& shape, const Tensor& block) {
  const double rows = static_cast<double>(shape[0]), d = static_cast<double>(shape[1]);
  // x in, y out (bf16); weight and bias in (bf16); mean and rstd out (f32, kept for backward).
  Case c{"layer_norm forward", shape, "bf16", 2.0 * 2.0 * rows * d + 2.0 * 2.0 * d + 2.0 * 4.0 * rows,
         "also writes f32 mean and rstd per row", true, nullptr};
  c.make = [shape, block](int sets) -> Run {
    std::vector<NormSet> n;
    for (int s = 0; s < sets; ++s) n.push_back(norm_set(shape, block, false));
    return [n](int s) {
      NoGradGuard no_grad;
      const NormSet& t = n[static_cast<size_t>(s)];
      layer_norm(t.x, t.w, t.b);
    };
  };
  return c;
}

Case layer_norm_backward_case(const Shape& shape, const Tensor& block) {
  const double rows = static_cast<double>(shape[0]), d = static_cast<double>(shape[1]);
  // x, dy in, dx out; weight in, dweight and dbias out; mean and rstd (f32) in.
  Case c{"layer_norm backward", shape, "bf16", 3.0 * 2.0 * rows * d + 3.0 * 2.0 * d + 2.0 * 4.0 * rows,
         "the recorded node's backward (dx, dweight, dbias) as the engine calls it", true, nullptr};
  c.make = node_backward(shape, block, [shape, block] {
    const NormSet n = norm_set(shape, block, true);
    return layer_norm(n.x, n.w, n.b).grad_fn();
  });
  return c;
}

Case softmax_case(const Shape& shape, const Tensor& block) {
  Case c{"softmax forward", shape, "bf16", 2.0 * 2.0 * elements(shape), "over the last dim", true, nullptr};
  c.make = [shape, block](int sets) -> Run {
    std::vector<Tensor> x;
    for (int s = 0; s < sets; ++s) x.push_back(random_on_gpu(shape, DType::BF16, block));
    return [x](int s) {
      NoGradGuard no_grad;
      softmax(x[static_cast<size_t>(s)], -1);
    };
  };
  return c;
}

Case cross_entropy_case(const Shape& shape, const Tensor& block) {
  const double rows = static_cast<double>(shape[0]), classes = static_cast<double>(shape[1]);
  // Two ops, each reading its inputs once: the forward reads the logits (bf16) and the targets
  // (i64) and writes the loss; the backward reads the logits again (the loss gradient may be any
  // value, so it cannot be folded into the forward) and writes dlogits.
  Case c{"cross_entropy forward+backward", shape, "bf16", 3.0 * 2.0 * rows * classes + 8.0 * rows + 4.0,
         "logits read by each pass, dlogits written once; no host sync", true, nullptr};
  c.make = [shape, block](int sets) -> Run {
    std::vector<Tensor> logits, targets;
    for (int s = 0; s < sets; ++s) {
      logits.push_back(random_on_gpu(shape, DType::BF16, block));
      logits.back().requires_grad_();
      targets.push_back(randint(0, shape[1], {shape[0]}, DType::I64, gpu()));
    }
    const Tensor one = scalar_tensor(1.0, DType::F32, gpu());
    return [logits, targets, one](int s) {
      const Tensor loss = cross_entropy(logits[static_cast<size_t>(s)], targets[static_cast<size_t>(s)]);
      NoGradGuard no_grad;
      loss.grad_fn()->apply(std::vector<Tensor>{one});
    };
  };
  return c;
}

// The XPOS / RoPE rotation of q or k (B, N, H, D) with (N, D/2) f32 tables, forward or the
// recorded node's backward (the inverse rotation of dy).
Case rotary_case(const Shape& shape, const Tensor& block, bool backward) {
  const double tables = 2.0 * 4.0 * static_cast<double>(shape[1] * shape[3] / 2);
  Case c{backward ? "rotate_pairs backward" : "rotate_pairs forward", shape, "bf16, f32 tables",
         2.0 * 2.0 * elements(shape) + tables, "XPOS rotation; tables (N, D/2) read once", true, nullptr};
  const Shape table = {shape[1], shape[3] / 2};
  if (backward) {
    c.make = node_backward(shape, block, [shape, table, block] {
      return rotate_pairs(random_on_gpu(shape, DType::BF16, block).requires_grad_(),
                          random_on_gpu(table, DType::F32, block), random_on_gpu(table, DType::F32, block))
          .grad_fn();
    });
    return c;
  }
  c.make = [shape, table, block](int sets) -> Run {
    std::vector<Tensor> x, cos, sin;
    for (int s = 0; s < sets; ++s) {
      x.push_back(random_on_gpu(shape, DType::BF16, block));
      cos.push_back(random_on_gpu(table, DType::F32, block));
      sin.push_back(random_on_gpu(table, DType::F32, block));
    }
    return [x, cos, sin](int s) {
      const auto i = static_cast<size_t>(s);
      rotate_pairs(x[i], cos[i], sin[i]);
    };
  };
  return c;
}

Case adamw_case(int64_t n, DType grad_dtype, const Tensor& block) {
  // param, exp_avg, exp_avg_sq read and written (f32); grad read.
  const double bytes = static_cast<double>(n) * (3.0 * 2.0 * 4.0 + static_cast<double>(dtype_size(grad_dtype)));
  Case c{"adamw_update_", {n}, std::string("f32, ") + dtype_name(grad_dtype) + " grad", bytes,
         "decoupled weight decay, bias correction", true, nullptr};
  c.make = [n, grad_dtype, block](int sets) -> Run {
    std::vector<Tensor> p, g, m, v;
    for (int s = 0; s < sets; ++s) {
      p.push_back(random_on_gpu({n}, DType::F32, block));
      g.push_back(random_on_gpu({n}, grad_dtype, block));
      m.push_back(zeros({n}, DType::F32, gpu()));
      v.push_back(zeros({n}, DType::F32, gpu()));
    }
    AdamWParams h;
    h.lr = 1e-4, h.weight_decay = 0.1, h.step = 10;
    return [p, g, m, v, h](int s) {
      NoGradGuard no_grad;
      const auto i = static_cast<size_t>(s);
      adamw_update_(p[i], g[i], m[i], v[i], h);
    };
  };
  return c;
}

std::vector<Case> make_cases(bool quick, const Tensor& block) {
  // {large, medium} shapes; the large ones move at least 256 MiB (quick: smaller everywhere).
  const auto pick = [quick](Shape full_large, Shape full_medium, Shape quick_large, Shape quick_medium) {
    return quick ? std::vector<Shape>{quick_large, quick_medium} : std::vector<Shape>{full_large, full_medium};
  };
  std::vector<Case> cases;
  for (const Shape& s : pick({65536, 1024}, {8192, 1024}, {16384, 1024}, {2048, 1024})) {
    cases.push_back(add_case(s, block));
  }
  for (const Shape& s : pick({32768, 3072}, {4096, 3072}, {8192, 3072}, {1024, 3072})) {
    cases.push_back(gelu_case(s, block));
  }
  for (const Shape& s : pick({32768, 3072}, {4096, 3072}, {8192, 3072}, {1024, 3072})) {
    cases.push_back(gelu_backward_case(s, block));
  }
  for (const Shape& s : pick({1, 32768, 768}, {1, 4096, 768}, {1, 8192, 768}, {1, 1024, 768})) {
    cases.push_back(sum_to_case(s, block));
  }
  for (const Shape& s : pick({65536, 1024}, {16384, 768}, {16384, 1024}, {4096, 768})) {
    cases.push_back(layer_norm_forward_case(s, block));
  }
  for (const Shape& s : pick({65536, 1024}, {16384, 768}, {16384, 1024}, {4096, 768})) {
    cases.push_back(layer_norm_backward_case(s, block));
  }
  for (const Shape& s : pick({32768, 4096}, {4096, 4096}, {8192, 4096}, {1024, 4096})) {
    cases.push_back(softmax_case(s, block));
  }
  for (const Shape& s : pick({8192, 50257}, {1024, 50257}, {2048, 50257}, {256, 50257})) {
    cases.push_back(cross_entropy_case(s, block));
  }
  // The 125M model's q at N = 32K (12 heads of 64), and a quarter of it.
  for (const Shape& s : pick({1, 32768, 12, 64}, {1, 8192, 12, 64}, {1, 8192, 12, 64}, {1, 2048, 12, 64})) {
    for (bool backward : {false, true}) cases.push_back(rotary_case(s, block, backward));
  }
  for (DType g : {DType::F32, DType::BF16}) {
    for (const Shape& s : pick({125000000}, {4194304}, {16777216}, {1048576})) {
      cases.push_back(adamw_case(s[0], g, block));
    }
  }
  return cases;
}

void print_row(const std::string& op, const Shape& shape, const std::string& dtype, double bytes, double ms,
               double copy, const std::string& note) {
  const double gbs = bytes / ms * 1e-6, copy_gbs = bytes / copy * 1e-6;
  std::printf("| %s | %s | %s | %.1f | %.4f | %.0f | %.0f | %.1f%% | %s |\n", op.c_str(), shape_str(shape).c_str(),
              dtype.c_str(), bytes / kMiB, ms, gbs, copy_gbs, 100.0 * gbs / copy_gbs, note.c_str());
  std::fflush(stdout);
}

int run_ops_bench(const OpsBenchOptions& opt) {
  if (cuda::device_count() == 0) {
    std::fprintf(stderr, "bench ops: no CUDA device is visible to this process; the benchmark needs a GPU\n");
    return 1;
  }
  const Tensor block = randn({kRandomBlock}, DType::F32, gpu());
  const std::vector<Case> cases = make_cases(opt.quick, block);
  std::printf("## Memory-bound ops on %s: framework ops on cuda:%d\n\n", cuda::properties(kDevice).name, kDevice);
  std::printf("Median of %d CUDA-event timed runs after %d warm-up runs; cases whose bytes are under 4x the L2 "
              "cache rotate among %d buffer sets. *MiB moved*: the fewest bytes the op must move (each input read "
              "once, each output written once). *copy GB/s*: cudaMemcpyAsync device to device of the same number "
              "of bytes (half read, half written), timed in the same run. Outputs are allocated from the "
              "stream-ordered pool inside the timed interval, as users get them.\n\n",
              opt.reps, kWarmup, kMaxSets);
  std::printf("| op | shape | dtype | MiB moved | median ms | GB/s | copy GB/s | %% of copy | note |\n");
  std::printf("|---|---|---|---:|---:|---:|---:|---:|---|\n");
  for (double moved : {opt.quick ? 128.0 * kMiB : 1024.0 * kMiB, opt.quick ? 16.0 * kMiB : 64.0 * kMiB}) {
    const int sets = sets_for(moved);
    const double ms = copy_ms(moved, sets, opt.reps);
    print_row("copy (anchor)", {static_cast<int64_t>(moved / 2.0)}, "u8", moved, ms, ms, "cudaMemcpyAsync");
  }
  double worst = std::numeric_limits<double>::infinity();
  std::string worst_op;
  for (const Case& c : cases) {
    const int sets = sets_for(c.bytes);
    double ms = 0.0;
    {
      const Run run = c.make(sets);
      ms = median_ms(run, sets, opt.reps, c.gated);
    }  // the case's buffers go back to the pool before the copy's are taken
    const double copy = copy_ms(c.bytes, sets, opt.reps);
    print_row(c.op, c.shape, c.dtype, c.bytes, ms, copy, c.note);
    if (copy / ms < worst) worst = copy / ms, worst_op = c.op + " " + shape_str(c.shape);
  }
  std::printf("\nLowest share of the copy's bandwidth: %.1f%% (%s).\n", worst * 100.0, worst_op.c_str());
  return 0;
}

#else

int run_ops_bench(const OpsBenchOptions&) {
  std::fprintf(stderr, "bench ops: this build has no CUDA backend (configure with -DLONGNET_CUDA=ON)\n");
  return 1;
}

#endif

}  // namespace

void register_bench_ops(CLI::App& bench) {
  auto opt = std::make_shared<OpsBenchOptions>();
  CLI::App* ops = bench.add_subcommand(
      "ops",
      "CUDA memory-bound ops (add, gelu and its backward, sum_to, layer_norm, softmax, cross_entropy, rotate_pairs, "
      "AdamW) vs a device copy");
  ops->add_option("--reps", opt->reps, "Timed runs per case (median; at least 20)")->check(CLI::Range(20, 100000));
  ops->add_flag("--quick", opt->quick, "Smaller shapes (smoke test)");
  on_run(ops, [opt] { return run_ops_bench(*opt); });
}

}  // namespace longnet::tools
