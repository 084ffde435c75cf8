// Training-step throughput of a model preset. One step is the LM loss forward and its backward
// (gradients accumulate into the parameters, as in training; no optimizer update). On a GPU the
// times are medians of CUDA-event intervals on the framework's stream after warm-up steps, each
// step issued as the host reaches it; on the CPU, medians of wall-clock times.
#include "tools/longnet/bench_model.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "framework/core/storage.h"
#include "framework/ops/factory.h"
#include "models/longnet_lm.h"
#include "models/summary.h"
#include "tools/longnet/bench_decode.h"
#include "tools/longnet/bench_memory.h"
#include "tools/longnet/bench_timing.h"
#include "tools/longnet/model_flops.h"
#include "tools/longnet/registry.h"

#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/context.h"
#include "framework/cuda/runtime.h"
#endif

namespace longnet::tools {
namespace {

constexpr double kPeakTflops = kPeakBf16Tflops;
constexpr double kMiB = 1024.0 * 1024.0;

struct ModelBenchOptions {
  std::string preset = "125m";
  std::vector<int64_t> seq_lens{8192, 32768};
  int64_t batch = 1;
  std::string dtype = "bf16";
  std::string device = "cuda";
  std::string attention;  // empty: the preset's
  bool checkpoint = false;
  int reps = 5;
  int warmup = 2;
  int64_t decode_tokens = 0;
  bool memory = false;
};

std::string cell(const std::optional<double>& v, const char* format) {
  if (!v) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, *v);
  return buf;
}

// --memory: the graph's breakdown at each length instead of the timing table.
int run_memory(const ModelBenchOptions& o, const ModelConfig& config, const LongNetLM& model,
               const std::string& device_name) {
  const Device device = default_device();
  std::printf("## Autograd graph memory: %s on %s, %s activations, batch %lld\n\n", o.preset.c_str(),
              device_name.c_str(), o.dtype.c_str(), static_cast<long long>(o.batch));
  std::printf("What the loss forward leaves for the backward: each storage once, charged to the first node in forward "
              "order that keeps it; parameters not counted, their casts to %s apart.%s\n\n",
              o.dtype.c_str(),
              device.is_cpu() && is_reduced_float(config.compute_dtype)
                  ? " CPU kernels compute 16-bit floats in f32, so nodes that keep their kernel inputs (attention, "
                    "the loss) keep f32 copies here where a GPU keeps 16-bit ones."
                  : "");
  for (const int64_t n : o.seq_lens) {
    Generator g(n);
    const Tensor tokens = randint(0, config.vocab_size, {o.batch, n}, DType::I64, device, &g);
    const Tensor targets = randint(0, config.vocab_size, {o.batch, n}, DType::I64, device, &g);
    std::printf("### N = %lld (%lld tokens)\n\n", static_cast<long long>(n), static_cast<long long>(o.batch * n));
    print_graph_memory(graph_memory(model, tokens, targets), config.dim,
                       static_cast<int64_t>(dtype_size(config.compute_dtype)));
    std::fflush(stdout);
  }
  return 0;
}

int run(const ModelBenchOptions& o) {
  const Device device = device_from_string(o.device);
#ifdef LONGNET_WITH_CUDA
  if (device.is_cuda() && cuda::device_count() == 0) {
    std::fprintf(stderr, "bench model: no CUDA device is visible; run on a GPU or pass --device cpu with a small preset "
                         "(e.g. --preset small --seq-len 512)\n");
    return 1;
  }
#else
  if (device.is_cuda()) {
    std::fprintf(stderr, "bench model: this build has no CUDA backend; pass --device cpu with a small preset "
                         "(e.g. --preset small --seq-len 512) or configure with -DLONGNET_CUDA=ON\n");
    return 1;
  }
#endif
  LN_CHECK(o.batch >= 1 && !o.seq_lens.empty(), "bench model: --batch must be >= 1 and --seq-len non-empty");
  ModelConfig config = model_preset(o.preset);
  config.compute_dtype = dtype_from_name(o.dtype);
  config.checkpoint_activations = o.checkpoint;
  if (!o.attention.empty()) config.attention = o.attention;
  DefaultDeviceGuard guard(device);
  LongNetLM model(config);
  const int64_t params = model.parameter_count();
  const std::string device_name =
#ifdef LONGNET_WITH_CUDA
      device.is_cuda() ? std::string(cuda::properties(device.index).name) :
#endif
                       std::string("CPU");
  if (o.memory) return run_memory(o, config, model, device_name);
  std::printf("## Model training step: %s (%s parameters) on %s, %s activations, batch %lld%s\n\n", o.preset.c_str(),
              human_count(params).c_str(), device_name.c_str(), o.dtype.c_str(), static_cast<long long>(o.batch),
              o.checkpoint ? ", activation checkpointing" : "");
  std::printf("Attention: %s; %d layers of %lld heads x %lld. One step: loss forward + backward (no optimizer). "
              "Median of %d runs after %d warm-up runs. Model FLOPs: 6 x parameters x tokens + attention (forward "
              "4 D per attended pair, causal; backward 2.5x). MFU against %.0f TFLOP/s. Peak: the allocator's "
              "high-water mark over one step, parameters and gradients included.\n\n",
              config.attention.c_str(), static_cast<int>(config.layers), static_cast<long long>(config.heads),
              static_cast<long long>(config.head_dim()), o.reps, o.warmup, kPeakTflops);
  std::printf("| N | ms / step | tokens/s | model TFLOP/s | attention share | MFU | peak MiB | decode tokens/s |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const int64_t n : o.seq_lens) {
    Generator g(n);
    const Tensor tokens = randint(0, config.vocab_size, {o.batch, n}, DType::I64, device, &g);
    const Tensor targets = randint(0, config.vocab_size, {o.batch, n}, DType::I64, device, &g);
    const auto step = [&] {
      model.zero_grad();
      model.loss(tokens, targets).loss.backward();
    };
    const double ms = median_ms(step, device, o.reps, o.warmup);
    synchronize_device(device);
    reset_peak_memory(device);
    step();
    synchronize_device(device);
    const double peak = static_cast<double>(memory_stats(device).peak_bytes) / kMiB;
    const double tokens_per_step = static_cast<double>(o.batch * n);
    const double attention = attention_training_flops(config, o.batch, n);
    const double flops = training_step_flops(config, params, o.batch, n);
    const double tflops = flops / (ms * 1e-3) * 1e-12;
    std::optional<double> decode;
    if (o.decode_tokens > 0) {
      model.eval();
      decode = measure_decode(model, n, o.batch, o.decode_tokens).tokens_per_second;
      model.train();
    }
    std::printf("| %lld | %.1f | %.0f | %.1f | %.0f%% | %.1f%% | %.0f | %s |\n", static_cast<long long>(n), ms,
                tokens_per_step / (ms * 1e-3), tflops, 100.0 * attention / flops, 100.0 * tflops / kPeakTflops, peak,
                cell(decode, "%.0f").c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

void register_bench_model(CLI::App& bench) {
  auto o = std::make_shared<ModelBenchOptions>();
  CLI::App* sub = bench.add_subcommand("model", "Training-step throughput of a model preset (tokens/s, TFLOP/s, MFU, memory)");
  sub->add_option("--preset", o->preset, "Model preset (tiny, small, 125m, 350m, 760m, 1.3b, 2.7b)");
  sub->add_option("--seq-len", o->seq_lens, "Sequence lengths, comma separated")->delimiter(',');
  sub->add_option("--batch", o->batch, "Sequences per step");
  sub->add_option("--dtype", o->dtype, "Activation dtype: bf16, f16 or f32 (parameters stay f32)");
  sub->add_option("--device", o->device, "cuda, cuda:N or cpu");
  sub->add_option("--attention", o->attention, "Attention core instead of the preset's (dense, dilated, ...)");
  sub->add_flag("--checkpoint", o->checkpoint, "Activation checkpointing per layer");
  sub->add_option("--reps", o->reps, "Timed steps per length (median)")->check(CLI::Range(1, 100000));
  sub->add_option("--warmup", o->warmup, "Untimed steps before them")->check(CLI::Range(0, 100000));
  sub->add_option("--decode", o->decode_tokens, "Also time decoding this many tokens after each length (KV cache)");
  sub->add_flag("--memory", o->memory,
                "Instead of timing: the activation memory the autograd graph keeps after the loss forward, by layer "
                "and by backward node (e.g. --device cpu --seq-len 2048)");
  on_run(sub, [o] { return run(*o); });
}

}  // namespace longnet::tools
