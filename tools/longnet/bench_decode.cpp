#include "tools/longnet/bench_decode.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "framework/autograd/grad_mode.h"
#include "framework/core/error.h"
#include "framework/core/storage.h"
#include "framework/ops/attention.h"
#include "framework/ops/factory.h"
#include "models/generation.h"
#include "tools/longnet/registry.h"

#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/runtime.h"
#endif

namespace longnet::tools {
namespace {

using Clock = std::chrono::steady_clock;

constexpr double kMiB = 1024.0 * 1024.0;

struct DecodeBenchOptions {
  std::string preset = "125m";
  std::vector<std::string> attention{"dilated", "dense"};
  std::vector<int64_t> context{4096, 32768};
  int64_t batch = 1;
  int64_t steps = 32;
  int64_t warmup = 4;
  int64_t prefill_chunk = 4096;
  std::string device = "auto";  // auto | cpu | cuda
  std::string dtype;            // default: bf16 on the GPU, f32 on the CPU
  std::string kernel = "auto";  // dense attention parts on the GPU: auto | own | cudnn
};

AttentionKernel kernel_from_name(const std::string& name) {
  if (name == "own") return AttentionKernel::Own;
  if (name == "cudnn") return AttentionKernel::Cudnn;
  LN_CHECK(name == "auto", "[bench decode] --attention-kernel must be auto, own or cudnn, got '", name, "'");
  return AttentionKernel::Auto;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

bool have_gpu() {
#ifdef LONGNET_WITH_CUDA
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

Device pick_device(const std::string& name) {
  if (name == "cpu") return Device::cpu();
  LN_CHECK(name == "cuda" || name == "auto", "[bench decode] --device must be auto, cpu or cuda, got '", name, "'");
  if (have_gpu()) return Device::cuda(0);
  LN_CHECK(name == "auto", "[bench decode] --device cuda, but no CUDA device is usable (or the build has no CUDA)");
  return Device::cpu();
}

int run_decode_bench(const DecodeBenchOptions& opt) {
  const Device device = pick_device(opt.device);
  const DType dtype = opt.dtype.empty() ? (device.is_cuda() ? DType::BF16 : DType::F32) : dtype_from_name(opt.dtype);
  const AttentionKernelScope kernel(kernel_from_name(opt.kernel));
  std::printf("decode speed: preset %s, batch %lld, %s %s (attention kernel %s), %lld timed steps after %lld warm-up, "
              "prefill chunks of %lld\n",
              opt.preset.c_str(), static_cast<long long>(opt.batch), device.str().c_str(), dtype_name(dtype),
              opt.kernel.c_str(),
              static_cast<long long>(opt.steps), static_cast<long long>(opt.warmup),
              static_cast<long long>(opt.prefill_chunk));
  std::printf("(a step: the decoder over one new token per sequence against the KV cache, then the greedy choice on the "
              "host, as generate() runs it)\n\n");
  std::printf("%-13s %8s %10s %12s %10s %12s %10s %10s\n", "attention", "context", "prefill s", "prefill tok/s",
              "step ms", "decode tok/s", "KV MiB", "peak MiB");
  for (const std::string& kind : opt.attention) {
    ModelConfig config = model_preset(opt.preset);
    config.attention = kind;
    config.compute_dtype = dtype;
    validate(config, device);
    DefaultDeviceGuard on(device);
    LongNetLM model(config);
    model.eval();
    for (int64_t context : opt.context) {
      const DecodeBenchResult r = measure_decode(model, context, opt.batch, opt.steps, opt.warmup, opt.prefill_chunk);
      std::printf("%-13s %8lld %10.3f %12.0f %10.3f %12.1f %10.1f %10.1f\n", kind.c_str(), static_cast<long long>(context),
                  r.prefill_seconds, static_cast<double>(context * opt.batch) / r.prefill_seconds, r.step_ms,
                  r.tokens_per_second, static_cast<double>(r.cache_bytes) / kMiB, static_cast<double>(r.peak_bytes) / kMiB);
      std::fflush(stdout);
    }
  }
  return 0;
}

// "a,b,c" -> items.
template <class T>
std::vector<T> split_list(const std::string& s) {
  std::vector<T> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    if constexpr (std::is_same_v<T, std::string>) {
      out.push_back(item);
    } else {
      out.push_back(std::stoll(item));
    }
  }
  return out;
}

}  // namespace

DecodeBenchResult measure_decode(const LongNetLM& model, int64_t context, int64_t batch, int64_t steps, int64_t warmup,
                                 int64_t prefill_chunk) {
  LN_CHECK(context >= 1 && batch >= 1 && steps >= 1 && warmup >= 0, "[bench decode] context, batch and steps must be ",
           "positive and warmup non-negative, got ", context, ", ", batch, ", ", steps, ", ", warmup);
  const Device device = model.decoder().embed_tokens().weight().device();
  NoGradGuard no_grad;
  Generator g(1234);
  const std::vector<int64_t> ids =
      randint(0, model.config().vocab_size, {batch, context}, DType::I64, Device::cpu(), &g).to_vector<int64_t>();
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < batch; ++b) prompts.emplace_back(ids.begin() + b * context, ids.begin() + (b + 1) * context);

  GenerationConfig config;
  config.max_new_tokens = warmup + steps + 1;  // the first token ends the prefill
  config.sampling.temperature = 0.0;
  config.prefill_chunk = prefill_chunk;
  // Every sequence draws at every step (equal prompts), so sequence 0's token times are the steps'.
  std::vector<Clock::time_point> at;
  reset_peak_memory(device);
  const Clock::time_point start = Clock::now();
  generate(model, prompts, config, [&](int64_t sequence, int64_t) {
    if (sequence == 0) at.push_back(Clock::now());
  });
  DecodeBenchResult r;
  r.context = context;
  r.batch = batch;
  r.steps = steps;
  r.prefill_seconds = seconds_between(start, at.front());
  std::vector<double> step;
  for (size_t i = static_cast<size_t>(warmup) + 1; i < at.size(); ++i) step.push_back(seconds_between(at[i - 1], at[i]));
  std::nth_element(step.begin(), step.begin() + static_cast<std::ptrdiff_t>(step.size() / 2), step.end());
  r.step_ms = step[step.size() / 2] * 1e3;
  r.tokens_per_second = static_cast<double>(batch) / (r.step_ms * 1e-3);
  const ModelConfig& c = model.config();
  const int64_t length = context + config.max_new_tokens;
  const DType cached = device.is_cuda() ? c.compute_dtype : DType::F32;
  r.cache_bytes = 2 * c.layers * batch * length * c.dim * static_cast<int64_t>(dtype_size(cached));
  r.peak_bytes = memory_stats(device).peak_bytes;
  return r;
}

void register_bench_decode(CLI::App& bench) {
  auto opt = std::make_shared<DecodeBenchOptions>();
  auto attention = std::make_shared<std::string>("dilated,dense");
  auto context = std::make_shared<std::string>("4096,32768");
  CLI::App* cmd = bench.add_subcommand("decode", "Generation speed with the KV cache: prefill time and decoding tokens/s");
  cmd->add_option("--preset", opt->preset, "Model preset (random weights)");
  cmd->add_option("--attention", *attention, "Attention cores, comma-separated (dense, dilated, block_sparse, adaptive)");
  cmd->add_option("--context", *context, "Prompt lengths, comma-separated");
  cmd->add_option("--batch", opt->batch, "Sequences decoded together")->check(CLI::PositiveNumber);
  cmd->add_option("--steps", opt->steps, "Timed decoding steps (median reported)")->check(CLI::PositiveNumber);
  cmd->add_option("--warmup", opt->warmup, "Untimed decoding steps first")->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefill-chunk", opt->prefill_chunk, "Positions per prefill call")->check(CLI::PositiveNumber);
  cmd->add_option("--device", opt->device, "auto (the GPU when there is one), cpu or cuda");
  cmd->add_option("--dtype", opt->dtype, "Compute dtype (default bf16 on the GPU, f32 on the CPU)");
  cmd->add_option("--attention-kernel", opt->kernel, "Dense attention parts on the GPU: auto (cuDNN where it can), own, cudnn");
  on_run(cmd, [opt, attention, context] {
    opt->attention = split_list<std::string>(*attention);
    opt->context = split_list<int64_t>(*context);
    return run_decode_bench(*opt);
  });
}

}  // namespace longnet::tools
