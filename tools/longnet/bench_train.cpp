// `bench train`: a training step of our model against the PyTorch reference of the same model.
// Both sides run the same step (loss forward, backward, AdamW update, f32 master weights, compute
// in --dtype) on the same preset, sequence length and batch (1), and are timed the same way: the
// median wall-clock time of the timed steps, each ended by a device synchronisation, after
// warm-up steps; peak memory is the allocator's high-water mark over the timed steps (ours: the
// framework's pool; PyTorch: torch.cuda.max_memory_allocated), parameters, gradients and optimizer
// state included. The PyTorch runs come first, each in its own process, before our process
// allocates anything, so that neither holds memory the other needs.
#include "tools/longnet/bench_train.h"

#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/core/profiler.h"
#include "models/config.h"
#include "models/summary.h"
#include "tools/longnet/bench_dist.h"
#include "tools/longnet/bench_dist_internal.h"
#include "tools/longnet/bench_timing.h"
#include "tools/longnet/bench_torch.h"
#include "tools/longnet/bench_train_job.h"
#include "tools/longnet/model_flops.h"
#include "tools/longnet/registry.h"

#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/runtime.h"
#endif

namespace longnet::tools {
namespace {

using dist_bench::kMiB;
using dist_bench::printf_string;

constexpr double kGiB = 1024.0 * kMiB;
constexpr uint64_t kTokenSeed = 1234;

/// One side's outcome at one sequence length.
struct SideResult {
  enum class Status { NotRun, Ok, OutOfMemory, OverLimit, Failed } status = Status::NotRun;
  double ms = 0.0;
  std::optional<double> peak_bytes;
  std::string note;
};

ModelConfig config_at(const TrainBenchOptions& o, int64_t n) {
  ModelConfig c = model_preset(o.preset);
  c.compute_dtype = dtype_from_name(o.dtype);
  c.checkpoint_activations = train_bench_checkpointing(o.checkpoint, n);
  c.checkpoint_layers = o.checkpoint_layers;
  c.ffn_checkpoint = train_bench_ffn_checkpoint(o.ffn_checkpoint, n);
  return c;
}

int64_t limit_bytes(const TrainBenchOptions& o) { return static_cast<int64_t>(o.memory_limit_gb * kGiB); }

// ---- ours

/// Builds the job inside the attempt, so that a model that does not fit counts as out of memory.
SideResult ours_at(const TrainBenchOptions& o, Device device, int64_t n, int warmup, int steps) {
  std::unique_ptr<TrainingJob> job;
  const Attempt a = attempt_steps(
      device, limit_bytes(o), warmup, steps,
      [&] {
        job = std::make_unique<TrainingJob>(config_at(o, n), device, kTokenSeed);
        job->set_layout({n, 0, nullptr, nullptr, SequencePlacement::Contiguous});
      },
      [&] { job->step(); });
  job.reset();
  dist_bench::release_cached_memory(device);
  SideResult r;
  if (a.fit == Fit::OutOfMemory) r.status = SideResult::Status::OutOfMemory;
  if (a.fit == Fit::OverLimit) r.status = SideResult::Status::OverLimit;
  if (a.fit == Fit::Fits) {
    r.status = SideResult::Status::Ok;
    r.ms = median(a.ms);
  }
  r.peak_bytes = static_cast<double>(a.peak_bytes);
  return r;
}

/// Our step at n tokens under the profiler: `steps` steps after `warmup`, entries per step.
std::vector<ProfileEntry> profile_ours(const TrainBenchOptions& o, Device device, int64_t n) {
  std::vector<ProfileEntry> entries;
  {
    TrainingJob job(config_at(o, n), device, kTokenSeed);
    job.set_layout({n, 0, nullptr, nullptr, SequencePlacement::Contiguous});
    for (int i = 0; i < o.warmup; ++i) job.step();
    synchronize_device(device);
    Profiler profiler(device);
    for (int i = 0; i < o.steps; ++i) job.step();
    entries = profiler.finish();
  }
  dist_bench::release_cached_memory(device);
  for (ProfileEntry& e : entries) e.ms /= o.steps;
  return entries;
}

void print_profile(const TrainBenchOptions& o, Device device, int64_t n) {
  const std::vector<ProfileEntry> entries = profile_ours(o, device, n);
  double total = 0.0;
  for (const ProfileEntry& e : entries) total += e.ms;
  std::printf("\n### Where our step's time goes at N = %lld\n\n", static_cast<long long>(n));
  std::printf("Exclusive %s time per scope (inside it, not inside a scope nested in it), per step, mean of %d steps "
              "after %d warm-up steps. Forward scopes are ops; backward scopes are autograd nodes. The profiler "
              "marks every scope, which slows the host: a step here may take longer than in the table.\n\n",
              device.is_cuda() ? "GPU" : "wall-clock", o.steps, o.warmup);
  std::printf("| scope | calls / step | ms / step | share |\n|---|---:|---:|---:|\n");
  for (const ProfileEntry& e : entries) {
    std::printf("| %s | %.0f | %.3f | %.1f%% |\n", e.name.c_str(), static_cast<double>(e.calls) / o.steps, e.ms,
                total > 0.0 ? 100.0 * e.ms / total : 0.0);
  }
  std::printf("| total | | %.3f | |\n", total);
  std::fflush(stdout);
}

// ---- PyTorch

std::string torch_args(const TrainBenchOptions& o, int64_t n, int warmup, int steps) {
  std::string args = printf_string("--preset %s --seq-len %lld --batch 1 --steps %d --warmup %d --device %s --dtype %s",
                                   o.preset.c_str(), static_cast<long long>(n), steps, warmup, o.device.c_str(),
                                   o.dtype.c_str());
  if (!o.no_compile) args += " --compile";
  if (train_bench_checkpointing(o.checkpoint, n)) args += " --checkpoint";
  if (o.memory_limit_gb > 0.0) args += printf_string(" --memory-limit-gb %g", o.memory_limit_gb);
  return args;
}

SideResult torch_at(const TrainBenchOptions& o, const TorchScript& script, int64_t n, int warmup, int steps) {
  SideResult r;
  const std::string line = run_torch_script(script, torch_args(o, n, warmup, steps), "bench train");
  if (line.empty()) {
    r.status = SideResult::Status::Failed;
    return r;
  }
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.contains("status")) {
    r.status = SideResult::Status::Failed;
    return r;
  }
  if (j["status"] == "oom") {
    r.status = SideResult::Status::OutOfMemory;
    return r;
  }
  r.status = SideResult::Status::Ok;
  r.ms = j.value("step_ms", 0.0);
  if (j.contains("peak_bytes") && j["peak_bytes"].is_number()) r.peak_bytes = j["peak_bytes"].get<double>();
  if (j.contains("compile_note")) r.note = j["compile_note"].get<std::string>();
  if (r.peak_bytes && o.memory_limit_gb > 0.0 && *r.peak_bytes > static_cast<double>(limit_bytes(o))) {
    r.status = SideResult::Status::OverLimit;
  }
  return r;
}

// ---- report

std::string status_cell(const SideResult& r) {
  switch (r.status) {
    case SideResult::Status::NotRun: return "-";
    case SideResult::Status::OutOfMemory: return "OOM";
    case SideResult::Status::OverLimit: return "over limit";
    case SideResult::Status::Failed: return "failed";
    case SideResult::Status::Ok: break;
  }
  return "";
}

bool ok(const SideResult& r) { return r.status == SideResult::Status::Ok; }

std::string mib_cell(const SideResult& r) {
  return r.peak_bytes && ok(r) ? printf_string("%.1f", *r.peak_bytes / kMiB) : (ok(r) ? "n/a" : status_cell(r));
}

/// ms, tokens/s, MFU and peak MiB cells of one side.
std::string side_cells(const SideResult& r, int64_t n, double flops) {
  if (!ok(r)) {
    const std::string s = status_cell(r);
    return s + " | " + s + " | " + s + " | " + s;
  }
  const double seconds = r.ms * 1e-3;
  return printf_string("%.1f | %.0f | %.1f%% | ", r.ms, static_cast<double>(n) / seconds,
                       100.0 * flops / seconds * 1e-12 / kPeakBf16Tflops) + mib_cell(r);
}

std::string device_label(Device device) { return dist_bench::device_name(device); }

std::string limit_text(const TrainBenchOptions& o) {
  return o.memory_limit_gb > 0.0 ? printf_string("a step's peak at most %g GiB (PyTorch: "
                                                 "torch.cuda.set_per_process_memory_fraction)", o.memory_limit_gb)
                                 : std::string("the device's memory");
}

std::string join(const std::vector<int64_t>& v) {
  std::string s;
  for (const int64_t x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return s;
}

void print_header(const TrainBenchOptions& o, Device device, const ModelConfig& c, int64_t params) {
  const std::string ffn =
      o.ffn_checkpoint == "auto"
          ? printf_string("chunked (recomputed %lld tokens at a time) above %lld tokens",
                          static_cast<long long>(c.ffn_checkpoint_chunk), static_cast<long long>(kFfnChunkAbove))
          : o.ffn_checkpoint;
  const std::string checkpointing =
      (o.checkpoint == "auto" ? printf_string("above %lld tokens", static_cast<long long>(kCheckpointAbove))
                              : o.checkpoint) +
      "; ours' feed-forward sublayers: " + ffn;
  std::printf("## Training step against PyTorch: %s (%s parameters) on %s, %s compute, batch 1\n\n", o.preset.c_str(),
              human_count(params).c_str(), device_label(device).c_str(), o.dtype.c_str());
  std::printf("Both sides: attention %s (w = {%s}, r = {%s}), %lld layers of %lld heads x %lld; one step = loss "
              "forward + backward + AdamW update, f32 master weights; activation checkpointing %s. PyTorch: "
              "bench/pytorch/longnet_model.py (%s; the reference's dilated attention over PyTorch's fused flash "
              "attention with the LSE merge; AdamW, fused on CUDA). Step time: median wall-clock of %d steps after %d "
              "warm-up steps, each ended by a device synchronisation. MFU: (6 x parameters x tokens + attention "
              "FLOPs of the computed pairs) / time, against %.0f TFLOP/s. Peak: allocator high-water mark over "
              "the timed steps (parameters, gradients, optimizer state included); limit: %s.\n\n",
              c.attention.c_str(), join(c.attention_config.segment_lengths).c_str(),
              join(c.attention_config.dilation_rates).c_str(), static_cast<long long>(c.layers),
              static_cast<long long>(c.heads), static_cast<long long>(c.head_dim()), checkpointing.c_str(),
              o.no_compile ? "eager" : "torch.compile around the attention core", o.steps, o.warmup, kPeakBf16Tflops,
              limit_text(o).c_str());
}

void print_timing(const TrainBenchOptions& o, Device device, bool torch, const TorchScript& script, int64_t params) {
  std::vector<SideResult> reference(o.seq_lens.size());
  if (torch) {
    for (size_t i = 0; i < o.seq_lens.size(); ++i) reference[i] = torch_at(o, script, o.seq_lens[i], o.warmup, o.steps);
  }
  std::printf("| N | checkpointing | ours ms | ours tokens/s | ours MFU | ours peak MiB | PyTorch ms | PyTorch tokens/s "
              "| PyTorch MFU | PyTorch peak MiB | tokens/s ours / PyTorch | peak PyTorch / ours |\n");
  std::printf("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::vector<std::string> notes;
  std::vector<int64_t> fitted;  // lengths our step ran at
  for (size_t i = 0; i < o.seq_lens.size(); ++i) {
    const int64_t n = o.seq_lens[i];
    const ModelConfig c = config_at(o, n);
    const double flops = training_step_flops(c, params, 1, n);
    const SideResult ours = ours_at(o, device, n, o.warmup, o.steps);
    const SideResult& ref = reference[i];
    if (ok(ours)) fitted.push_back(n);
    const std::string speed = ok(ours) && ok(ref) ? printf_string("%.2f", ref.ms / ours.ms) : "-";
    const std::string memory = ok(ours) && ok(ref) && ref.peak_bytes && ours.peak_bytes && *ours.peak_bytes > 0
                                   ? printf_string("%.2f", *ref.peak_bytes / *ours.peak_bytes)
                                   : "-";
    const std::string checkpointing =
        std::string(!c.checkpoint_activations ? "off"
                    : c.checkpoint_layers > 0
                        ? printf_string("ours %lld of %lld layers, PyTorch all", static_cast<long long>(c.checkpoint_layers),
                                        static_cast<long long>(c.layers))
                        : "on") +
        (c.ffn_checkpoint == "activation" ? "" : "; ours FFN " + c.ffn_checkpoint);
    std::printf("| %lld | %s | %s | %s | %s | %s |\n", static_cast<long long>(n), checkpointing.c_str(),
                side_cells(ours, n, flops).c_str(), torch ? side_cells(ref, n, flops).c_str() : "- | - | - | -",
                speed.c_str(), memory.c_str());
    std::fflush(stdout);
    if (!ref.note.empty()) notes.push_back(printf_string("N = %lld: %s", static_cast<long long>(n), ref.note.c_str()));
  }
  for (const std::string& note : notes) std::printf("\nPyTorch note, %s\n", note.c_str());
  if (o.profile) {
    for (const int64_t n : fitted) print_profile(o, device, n);
  }
}

/// One search row: the longest fitting length, the step time and peak there, the first failure.
struct LongestRow {
  LongestSearch search;
  SideResult at_longest;
  SideResult at_failure;
};

LongestRow search_longest(const TrainBenchOptions& o, const std::function<SideResult(int64_t)>& attempt) {
  LongestRow row;
  std::map<int64_t, SideResult> seen;
  row.search = find_longest(o.longest_start, o.longest_unit, o.longest_max, o.bisect, [&](int64_t n) {
    std::fprintf(stderr, "[bench train] trying %lld tokens\n", static_cast<long long>(n));
    seen[n] = attempt(n);
    return ok(seen[n]);
  });
  if (row.search.longest > 0) row.at_longest = seen[row.search.longest];
  if (row.search.first_failure > 0) row.at_failure = seen[row.search.first_failure];
  return row;
}

void print_longest_row(const char* side, const LongestRow& r) {
  const std::string longest = r.search.longest > 0 ? std::to_string(r.search.longest) : "none";
  const std::string failure = r.search.first_failure > 0
                                  ? printf_string("%lld (%s)", static_cast<long long>(r.search.first_failure),
                                                  status_cell(r.at_failure).c_str())
                                  : "none up to the bound";
  const std::string seconds = ok(r.at_longest) ? printf_string("%.2f", r.at_longest.ms * 1e-3) : "-";
  std::printf("| %s | %s | %s | %s | %s | %d |\n", side, longest.c_str(), seconds.c_str(),
              ok(r.at_longest) ? mib_cell(r.at_longest).c_str() : "-", failure.c_str(), r.search.tries);
}

void print_longest(const TrainBenchOptions& o, Device device, bool torch, const TorchScript& script) {
  std::optional<LongestRow> reference;
  if (torch) reference = search_longest(o, [&](int64_t n) { return torch_at(o, script, n, 1, 1); });
  const LongestRow ours = search_longest(o, [&](int64_t n) { return ours_at(o, device, n, 1, 1); });
  std::printf("### Longest sequence a training step fits: doubling from %lld tokens%s, up to %lld; %s\n\n",
              static_cast<long long>(o.longest_start),
              o.bisect ? printf_string(", then bisection to %lld", static_cast<long long>(o.longest_unit)).c_str() : "",
              static_cast<long long>(o.longest_max), limit_text(o).c_str());
  std::printf("One warm-up and one timed step per try.\n\n");
  std::printf("| side | longest N | s / step there | peak MiB there | first failure | tries |\n");
  std::printf("|---|---:|---:|---:|---|---:|\n");
  print_longest_row("ours", ours);
  if (reference) print_longest_row("PyTorch", *reference);
}

/// Whether `device` can run here; prints why not.
bool device_usable(Device device) {
  if (!device.is_cuda()) return true;
#ifdef LONGNET_WITH_CUDA
  if (cuda::device_count() > 0) return true;
  std::fprintf(stderr, "bench train: no CUDA device is visible; run on a GPU or pass --device cpu with a small preset "
                       "(e.g. --preset tiny --seq-len 64)\n");
#else
  std::fprintf(stderr, "bench train: this build has no CUDA backend; pass --device cpu with a small preset (e.g. "
                       "--preset tiny --seq-len 64) or configure with -DLONGNET_CUDA=ON\n");
#endif
  return false;
}

}  // namespace

bool train_bench_checkpointing(const std::string& mode, int64_t n) {
  LN_CHECK(mode == "auto" || mode == "on" || mode == "off", "bench train: --checkpoint must be auto, on or off, got '",
           mode, "'");
  return mode == "auto" ? n > kCheckpointAbove : mode == "on";
}

std::string train_bench_ffn_checkpoint(const std::string& mode, int64_t n) {
  LN_CHECK(mode == "auto" || mode == "activation" || mode == "none" || mode == "chunked",
           "bench train: --ffn-checkpoint must be auto, activation, none or chunked, got '", mode, "'");
  if (mode != "auto") return mode;
  return n > kFfnChunkAbove ? "chunked" : "activation";
}

int run_bench_train(const TrainBenchOptions& o) {
  const Device device = device_from_string(o.device);
  if (!device_usable(device)) return 1;
  LN_CHECK(!o.seq_lens.empty(), "bench train: --seq-len needs at least one length");
  const ModelConfig config = config_at(o, o.seq_lens.front());
  validate(config, device);
  const int64_t params = analytic_parameter_count(config);
  print_header(o, device, config, params);
  const TorchScript script{o.python, o.script};
  const bool torch = torch_available(script, o.no_torch);
  if (o.longest) {
    print_longest(o, device, torch, script);
  } else {
    print_timing(o, device, torch, script, params);
  }
  return 0;
}

void register_bench_train(CLI::App& bench) {
  auto o = std::make_shared<TrainBenchOptions>();
  CLI::App* sub = bench.add_subcommand(
      "train", "Training step (with AdamW) against the PyTorch reference model: tokens/s, MFU, peak memory, ratios");
  sub->add_option("--preset", o->preset, "Model preset (tiny, small, 125m, ...)");
  sub->add_option("--seq-len", o->seq_lens, "Sequence lengths, comma separated (batch 1)")->delimiter(',');
  sub->add_option("--device", o->device, "cuda, cuda:N or cpu");
  sub->add_option("--dtype", o->dtype, "Compute dtype: bf16, f16 or f32 (master weights stay f32)");
  sub->add_option("--checkpoint", o->checkpoint, "Activation checkpointing, both sides: auto (above 32768 tokens), on, off");
  sub->add_option("--checkpoint-layers", o->checkpoint_layers,
                  "Ours, where checkpointing is on: how many layers recompute (the first ones; 0: all); PyTorch "
                  "recomputes every layer")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--ffn-checkpoint", o->ffn_checkpoint,
                  "Ours: what the feed-forward sublayers keep for the backward: auto (chunked above 262144 tokens, "
                  "else activation), activation, none, chunked (model.ffn_checkpoint)");
  sub->add_option("--steps", o->steps, "Timed steps per length (median)")->check(CLI::Range(1, 100000));
  sub->add_option("--warmup", o->warmup, "Untimed steps before them")->check(CLI::Range(0, 100000));
  sub->add_flag("--no-torch", o->no_torch, "Skip the PyTorch reference");
  sub->add_flag("--no-compile", o->no_compile, "Run the PyTorch reference eagerly (no torch.compile)");
  sub->add_option("--python", o->python, "Python interpreter with torch");
  sub->add_option("--torch-script", o->script, "The PyTorch reference model script");
  sub->add_flag("--longest", o->longest, "Search the longest sequence a step fits, ours and PyTorch's");
  sub->add_option("--longest-start", o->longest_start, "--longest: first length (doubled until a failure)");
  sub->add_option("--longest-max", o->longest_max, "--longest: upper bound");
  sub->add_option("--longest-unit", o->longest_unit, "--longest: lengths are multiples of this");
  sub->add_flag("--bisect", o->bisect, "--longest: bisect between the last fit and the first failure");
  sub->add_flag("--profile", o->profile, "After the table: our step's time per op and backward node at each length");
  sub->add_option("--memory-limit", o->memory_limit_gb, "GiB a step may peak at, both sides (0: the device's memory)")
      ->check(CLI::Range(0.0, 1e6));
  on_run(sub, [o] { return run_bench_train(*o); });
}

}  // namespace longnet::tools
