// `bench dist` training sections: data-parallel and sequence-parallel scaling of a training step,
// and the longest sequence a step fits. A step is what the trainer does: the LM loss forward and
// backward, the gradients averaged over the ranks by the GradientReducer (buckets all-reduced
// during backward), and an AdamW update.
//
// One-GPU baselines run on every rank at the same time, each rank alone (no communication): the
// baseline then sees the node under the same load as the N-GPU run (host threads, power, clocks),
// takes one GPU's time instead of N, and no rank idles long enough in a collective to trip the
// NCCL watchdog. Its figure is the slowest rank's, like every other.
#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <string>

#include "framework/core/error.h"
#include "framework/core/rng.h"
#include "framework/core/storage.h"
#include "framework/dist/reducer.h"
#include "framework/ops/factory.h"
#include "layers/parallel/sequence_parallel.h"
#include "models/longnet_lm.h"
#include "models/summary.h"
#include "optim/optimizer.h"
#include "tools/longnet/bench_dist.h"
#include "tools/longnet/bench_dist_internal.h"
#include "tools/longnet/bench_timing.h"
#include "tools/longnet/bench_train_job.h"
#include "tools/longnet/model_flops.h"

namespace longnet::tools {
namespace {

using dist_bench::kMiB;
using dist_bench::printf_string;

bool checkpointing(const DistBenchOptions& o, bool when_auto) {
  LN_CHECK(o.checkpoint == "auto" || o.checkpoint == "on" || o.checkpoint == "off",
           "bench dist: checkpoint must be auto, on or off, got '", o.checkpoint, "'");
  return o.checkpoint == "auto" ? when_auto : o.checkpoint == "on";
}

ModelConfig bench_config(const DistBenchOptions& o, const std::string& core, bool checkpoint) {
  ModelConfig c = model_preset(o.preset);
  c.attention = core;
  c.compute_dtype = dtype_from_name(o.dtype);
  c.checkpoint_activations = checkpoint;
  return c;
}

std::string list(const std::vector<int64_t>& v) {
  std::string s;
  for (const int64_t x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return "{" + s + "}";
}

ModelBenchInfo model_info(const DistBenchOptions& o, const ModelConfig& c, int64_t parameters, int warmup, int reps) {
  return {o.preset, parameters, o.dtype, c.checkpoint_activations,
          "w = " + list(c.attention_config.segment_lengths) + ", r = " + list(c.attention_config.dilation_rates), warmup,
          reps};
}

/// The single-process core whose result a sequence-parallel core reproduces.
std::string single_process_core(const std::string& parallel) {
  if (parallel == "dilated_parallel" || parallel == "head_parallel") return "dilated";
  if (parallel == "ring" || parallel == "head_parallel_dense") return "dense";
  LN_FAIL("bench dist: '", parallel,
          "' is not a sequence-parallel core (dilated_parallel, ring, head_parallel, head_parallel_dense)");
}

/// Per-rank times of `reps` steps after `warmup`, each timed step started after a barrier of
/// `align` (when given: all ranks start together) and ended by a device synchronisation; the peak
/// memory over the timed steps.
Attempt time_steps(dist::Communicator* align, Device device, int warmup, int reps, const std::function<void()>& step) {
  Attempt a;
  for (int i = 0; i < warmup; ++i) step();
  synchronize_device(device);
  reset_peak_memory(device);
  for (int i = 0; i < reps; ++i) {
    if (align != nullptr) align->barrier();
    const auto t0 = std::chrono::steady_clock::now();
    step();
    synchronize_device(device);
    a.ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  a.peak_bytes = memory_stats(device).peak_bytes;
  return a;
}

/// The ranks' attempts combined: fits only where it fits on every rank; each step's time is the
/// slowest rank's, the reported time their median; the peak is the largest.
struct Agreed {
  Fit fit = Fit::Fits;
  StepStats step;
};

Agreed agree(dist::Communicator& world, Device device, const Attempt& a, int reps) {
  std::vector<double> v{static_cast<double>(static_cast<int>(a.fit)), static_cast<double>(a.peak_bytes)};
  for (int i = 0; i < reps; ++i) v.push_back(i < static_cast<int>(a.ms.size()) ? a.ms[static_cast<size_t>(i)] : 0.0);
  v = dist_bench::max_over_ranks(world, device, v);
  Agreed r;
  r.fit = static_cast<Fit>(static_cast<int>(v[0]));
  r.step.peak_mib = v[1] / kMiB;
  if (r.fit == Fit::Fits && reps > 0) r.step.ms = median(std::vector<double>(v.begin() + 2, v.end()));
  return r;
}

/// Times `job`'s steps on every rank (they must all fit: a failure is an error with advice).
StepStats measure(dist::Communicator& world, Device device, int warmup, int reps, TrainingJob& job, const char* what) {
  try {
    return agree(world, device, time_steps(&world, device, warmup, reps, [&] { job.step(); }), reps).step;
  } catch (const std::exception& e) {
    if (!is_out_of_memory(e)) throw;
    LN_FAIL("bench dist: ", what, " does not fit in memory (", e.what(),
            "); try --checkpoint on or a shorter sequence");
  }
}

ScalingRow scaling_row(const std::string& core, int gpus, int64_t sequence, int64_t per_gpu, const StepStats& step,
                       double tokens, double flops) {
  ScalingRow row;
  row.core = core;
  row.gpus = gpus;
  row.sequence = sequence;
  row.per_gpu = per_gpu;
  row.step = step;
  const double seconds = step.ms * 1e-3;
  row.tokens_per_s = tokens / seconds;
  row.tflops_per_gpu = flops / seconds / gpus * 1e-12;
  return row;
}

/// The GPU counts a scaling section measures besides one: 2, 4, 8, ... below the world's size, and
/// the size itself.
std::vector<int> group_sizes(int world_size) {
  std::vector<int> sizes;
  for (int g = 2; g < world_size; g *= 2) sizes.push_back(g);
  if (world_size > 1) sizes.push_back(world_size);
  return sizes;
}

/// The world cut into groups of `size` consecutive ranks, which all train at the same time, so
/// that every count runs under the node's full load as the one-GPU baseline does. The world
/// itself when size is its size.
std::shared_ptr<dist::Communicator> group_of(dist::Communicator& world, int size) {
  LN_CHECK(world.size() % size == 0, "bench dist: ", world.size(), " ranks do not split into groups of ", size);
  if (size == world.size()) return std::shared_ptr<dist::Communicator>(&world, [](dist::Communicator*) {});
  return world.split(world.rank() / size, world.rank());
}

void progress(const DistBenchOptions& o, const dist::Communicator& world, const std::string& line) {
  if (o.log == nullptr || world.rank() != 0) return;
  std::fprintf(o.log, "[bench dist] %s\n", line.c_str());
  std::fflush(o.log);
}

std::string model_title(const ModelBenchInfo& m) {
  return printf_string("%s (%s parameters)", m.preset.c_str(), human_count(m.parameters).c_str());
}

std::string timing_text(const ModelBenchInfo& m) {
  return printf_string(
      "Step time: the median of %d timed steps after %d warm-up steps; each timed step starts on all ranks after a "
      "barrier and ends with a device synchronisation, and counts as the slowest rank's time. Peak: the framework "
      "allocator's high-water mark over the timed steps (parameters, gradients, optimizer state and the gradient "
      "buckets included), the largest over ranks.",
      m.reps, m.warmup);
}

}  // namespace

Attempt attempt_steps(Device device, int64_t limit_bytes, int warmup, int reps, const std::function<void()>& prepare,
                      const std::function<void()>& step) {
  Attempt a;
  try {
    if (prepare) prepare();
    a = time_steps(nullptr, device, warmup, reps, step);
    if (limit_bytes > 0 && a.peak_bytes > limit_bytes) a.fit = Fit::OverLimit;
  } catch (const std::exception& e) {
    if (!is_out_of_memory(e)) throw;
    a = Attempt{};
    a.fit = Fit::OutOfMemory;
  }
  dist_bench::release_cached_memory(device);
  return a;
}

ScalingResult bench_dist_dp(dist::Communicator& world, Device device, const DistBenchOptions& o) {
  DefaultDeviceGuard guard(device);
  const int n = world.size();
  const int warmup = o.warmup >= 0 ? o.warmup : 3, reps = o.reps > 0 ? o.reps : 10;
  const ModelConfig config = bench_config(o, model_preset(o.preset).attention, checkpointing(o, false));
  std::vector<std::shared_ptr<dist::Communicator>> groups;  // outlive the job, whose reducer uses them
  TrainingJob job(config, device, 1000 + static_cast<uint64_t>(world.rank()));
  ScalingResult r;
  r.section = "dp";
  r.ranks = n;
  r.device = dist_bench::device_name(device);
  r.model = model_info(o, config, job.parameters(), warmup, reps);
  r.sequence = o.dp_seq;
  const double flops = training_step_flops(config, job.parameters(), 1, o.dp_seq);  // one rank's step

  job.set_layout({o.dp_seq, 0, nullptr, nullptr, SequencePlacement::Contiguous});
  const StepStats one = measure(world, device, warmup, reps, job, "the 1-GPU data-parallel step");
  r.rows.push_back(scaling_row(config.attention, 1, o.dp_seq, o.dp_seq, one, static_cast<double>(o.dp_seq), flops));
  progress(o, world, printf_string("dp, 1 GPU: %.1f ms/step", one.ms));
  for (const int g : group_sizes(n)) {
    groups.push_back(group_of(world, g));
    job.set_layout({o.dp_seq, 0, groups.back().get(), nullptr, SequencePlacement::Contiguous});
    const StepStats all = measure(world, device, warmup, reps, job, "the data-parallel step");
    ScalingRow row = scaling_row(config.attention, g, o.dp_seq, o.dp_seq, all, static_cast<double>(g) * o.dp_seq, g * flops);
    row.efficiency = row.tflops_per_gpu / r.rows.front().tflops_per_gpu;
    r.rows.push_back(row);
    progress(o, world, printf_string("dp, %d GPUs: %.1f ms/step", g, all.ms));
  }
  return r;
}

ScalingResult bench_dist_sp(dist::Communicator& world, Device device, const DistBenchOptions& o) {
  DefaultDeviceGuard guard(device);
  register_parallel_attention_cores();
  const int n = world.size();
  const int warmup = o.warmup >= 0 ? o.warmup : 1, reps = o.reps > 0 ? o.reps : 3;
  const bool checkpoint = checkpointing(o, true);
  const int64_t one_seq = o.sp_seq;
  LN_CHECK(o.ring_placement == "zigzag" || o.ring_placement == "contiguous",
           "bench dist: ring placement must be zigzag or contiguous, got '", o.ring_placement, "'");
  ScalingResult r;
  r.section = "sp";
  r.ranks = n;
  r.device = dist_bench::device_name(device);
  r.sequence = o.sp_seq;
  r.per_gpu = o.per_gpu;
  r.ring_placement = o.ring_placement;
  std::map<std::string, size_t> baselines;  // single-process core -> its row
  for (const std::string& core : o.sp_cores) {
    const std::string single = single_process_core(core);
    const ModelConfig single_config = bench_config(o, single, checkpoint);
    if (baselines.count(single) == 0) {
      TrainingJob job(single_config, device, 2000 + static_cast<uint64_t>(world.rank()));
      r.model = model_info(o, single_config, job.parameters(), warmup, reps);
      job.set_layout({one_seq, 0, nullptr, nullptr, SequencePlacement::Contiguous});
      const StepStats one = measure(world, device, warmup, reps, job,
                                    printf_string("the 1-GPU step (%s) on %lld tokens", single.c_str(),
                                                  static_cast<long long>(one_seq)).c_str());
      const double flops = training_step_flops(single_config, job.parameters(), 1, one_seq);
      baselines[single] = r.rows.size();
      r.rows.push_back(scaling_row(single, 1, one_seq, one_seq, one, static_cast<double>(one_seq), flops));
      progress(o, world, printf_string("sp, 1 GPU, %s: %.1f ms/step", single.c_str(), one.ms));
      dist_bench::release_cached_memory(device);
    }
    const SequencePlacement placement = core == "ring" && o.ring_placement == "zigzag" ? SequencePlacement::Zigzag
                                                                                        : SequencePlacement::Contiguous;
    for (const int g : group_sizes(n)) {
      const int64_t all_seq = o.per_gpu ? g * o.sp_seq : o.sp_seq;
      const int64_t pieces = placement == SequencePlacement::Zigzag ? 2 * int64_t{g} : g;
      LN_CHECK(all_seq % pieces == 0, "bench dist: ", all_seq, " tokens do not split into ", pieces,
               " equal chunks for ", core, " on ", g, " ranks");
      const int64_t local = all_seq / g;
      const std::shared_ptr<dist::Communicator> group = group_of(world, g);
      {
        TrainingJob job(bench_config(o, core, checkpoint), device, 3000 + static_cast<uint64_t>(world.rank()));
        job.set_layout({local, sequence_positions(group->rank(), g, local, placement), group.get(), group.get(),
                        placement});
        const StepStats step = measure(world, device, warmup, reps, job,
                                       printf_string("the %s step on %lld tokens per GPU", core.c_str(),
                                                     static_cast<long long>(local)).c_str());
        const double flops = training_step_flops(single_config, job.parameters(), 1, all_seq);
        ScalingRow row = scaling_row(core, g, all_seq, local, step, static_cast<double>(all_seq), flops);
        row.efficiency = row.tflops_per_gpu / r.rows[baselines[single]].tflops_per_gpu;
        r.rows.push_back(row);
        progress(o, world, printf_string("sp, %d GPUs, %s: %.1f ms/step", g, core.c_str(), step.ms));
      }
      dist_bench::release_cached_memory(device);
    }
  }
  return r;
}

LongestResult bench_dist_longest(dist::Communicator& world, Device device, const DistBenchOptions& o) {
  DefaultDeviceGuard guard(device);
  register_parallel_attention_cores();
  const int n = world.size();
  const int warmup = o.warmup >= 0 ? o.warmup : 1, reps = o.reps > 0 ? o.reps : 1;
  const bool checkpoint = checkpointing(o, true);
  LN_CHECK(o.longest_start >= 1 && o.longest_start <= o.longest_max && o.longest_granularity >= 0 &&
               o.longest_start_n >= 0 && o.longest_start_n <= o.longest_max,
           "bench dist: the longest search needs 1 <= start (", o.longest_start, "), start for N GPUs (",
           o.longest_start_n, ") <= max (", o.longest_max, ") and a granularity >= 0");
  LongestResult r;
  r.ranks = n;
  r.device = dist_bench::device_name(device);
  r.memory_limit_bytes = o.memory_limit_bytes;
  r.max = o.longest_max;
  r.start = o.longest_start;
  r.start_n = o.longest_start_n > 0 ? o.longest_start_n : o.longest_start;

  const auto search = [&](int gpus, const std::string& core) {
    const ModelConfig config = bench_config(o, core, checkpoint);
    LongestRow row;
    row.gpus = gpus;
    row.core = core;
    // N GPUs: every rank's chunk a whole number of segments of every branch, so that
    // dilated_parallel takes it however long the sequence.
    const int64_t segments = std::accumulate(config.attention_config.segment_lengths.begin(),
                                             config.attention_config.segment_lengths.end(), int64_t{1},
                                             [](int64_t a, int64_t b) { return std::lcm(a, b); });
    const int64_t chunk_unit = gpus > 1 ? gpus * segments : 1;
    row.unit = std::lcm(chunk_unit, std::max<int64_t>(o.longest_granularity, 1));
    TrainingJob job(config, device, 4000 + static_cast<uint64_t>(world.rank()));
    r.model = model_info(o, config, job.parameters(), warmup, reps);
    dist::Communicator* group = gpus > 1 ? &world : nullptr;
    // Bisection may fit a shorter length after a longer one failed: keep each length's outcome.
    std::map<int64_t, StepStats> fitted;
    std::map<int64_t, Fit> failed;
    const auto fits = [&](int64_t total) {
      const int64_t local = total / gpus;
      const Attempt a = attempt_steps(
          device, o.memory_limit_bytes, warmup, reps,
          [&] {
            job.set_layout({local, gpus > 1 ? sequence_offset(world.rank(), local) : 0, group, group,
                            SequencePlacement::Contiguous});
          },
          [&] { job.step(); });
      const Agreed agreed = agree(world, device, a, reps);
      const std::string what = printf_string("longest, %d GPU(s), %s, %lld tokens:", gpus, core.c_str(),
                                             static_cast<long long>(total));
      if (agreed.fit != Fit::Fits) {
        failed[total] = agreed.fit;
        progress(o, world, what + (agreed.fit == Fit::OverLimit ? " peak over the limit" : " out of memory"));
        return false;
      }
      fitted[total] = agreed.step;
      progress(o, world, what + printf_string(" fits, %.1f ms/step, peak %.0f MiB", agreed.step.ms, agreed.step.peak_mib));
      return true;
    };
    const LongestSearch s = find_longest(gpus > 1 ? r.start_n : r.start, row.unit, o.longest_max, o.longest_granularity > 0, fits);
    row.longest = s.longest;
    row.first_failure = s.first_failure;
    row.tries = s.tries;
    row.per_gpu = s.longest / gpus;
    if (s.longest > 0) {
      row.step = fitted[s.longest];
      row.tokens_per_s = static_cast<double>(s.longest) / (row.step.ms * 1e-3);
    }
    if (s.first_failure > 0) {
      row.failure = failed[s.first_failure] == Fit::OverLimit ? "peak over the limit" : "out of memory";
    }
    r.rows.push_back(row);
  };
  search(1, "dilated");
  dist_bench::release_cached_memory(device);
  if (n > 1) search(n, "dilated_parallel");
  dist_bench::release_cached_memory(device);
  return r;
}

std::string format_scaling(const ScalingResult& r) {
  const ModelBenchInfo& m = r.model;
  std::string s;
  if (r.section == "dp") {
    s += printf_string("## Data parallel: %s, %d x %s, %s, %lld tokens per rank\n\n", model_title(m).c_str(), r.ranks,
                       r.device.c_str(), m.dtype.c_str(), static_cast<long long>(r.sequence));
    s += printf_string(
        "Attention: the preset's (%s), batch 1 per rank, activation checkpointing %s. One step: loss forward and "
        "backward, gradients averaged over the ranks by the GradientReducer (25 MiB buckets all-reduced during "
        "backward), AdamW step. 1 GPU: every rank trains alone at the same time (no gradient averaging), so that the "
        "baseline runs under the node's full load like the N-GPU run; likewise, a count below the node's runs as groups of "
        "that many ranks training at the same time. %s Efficiency: tokens/s on N GPUs / (N x "
        "tokens/s on 1).\n\n",
        m.schedule.c_str(), m.checkpoint ? "on" : "off", timing_text(m).c_str());
  } else {
    s += printf_string("## Sequence parallel: %s, %d x %s, %s, %lld tokens %s\n\n", model_title(m).c_str(), r.ranks,
                       r.device.c_str(), m.dtype.c_str(), static_cast<long long>(r.sequence),
                       r.per_gpu ? "per GPU (weak scaling)" : "in all (strong scaling)");
    s += printf_string(
        "Each sequence-parallel core against one GPU running its single-process core on %s: dilated_parallel "
        "(and head_parallel) against dilated (%s), ring (and head_parallel_dense) against dense causal attention. "
        "Ring places chunks %s. Batch 1, activation checkpointing %s; a step as in data parallelism (gradients "
        "averaged over all ranks, AdamW). 1 GPU: every rank runs the single-process core alone at the same time; a "
        "count below the node's runs as groups of that many ranks at the same time. %s "
        "Model FLOPs: 6 x parameters x tokens plus the attention pairs the core computes (forward 4 D per pair, "
        "backward 2.5x; checkpointing's recomputation not counted). Efficiency: model FLOP/s per GPU on N GPUs "
        "against one%s.\n\n",
        r.per_gpu ? "its own share" : "the whole sequence", m.schedule.c_str(),
        r.ring_placement == "zigzag"
            ? "zigzag (rank r holds chunks r and 2N-1-r, so that causal work is even)"
            : "contiguously (rank r holds chunk r: causal work grows with r)",
        m.checkpoint ? "on" : "off", timing_text(m).c_str(),
        r.per_gpu ? " (N GPUs train on N times the sequence)" : ", the same sequence: T1 / (N x TN)");
  }
  s += "| attention | GPUs | sequence | tokens per GPU | ms / step | tokens/s | model TFLOP/s per GPU | efficiency | peak "
       "MiB per GPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const ScalingRow& row : r.rows) {
    s += printf_string("| %s | %d | %lld | %lld | %.1f | %.0f | %.1f | %s | %.0f |\n", row.core.c_str(), row.gpus,
                       static_cast<long long>(row.sequence), static_cast<long long>(row.per_gpu), row.step.ms,
                       row.tokens_per_s, row.tflops_per_gpu,
                       row.gpus == 1 ? "baseline" : printf_string("%.1f%%", 100.0 * row.efficiency).c_str(),
                       row.step.peak_mib);
  }
  s += "\n";
  return s;
}

std::string format_longest(const LongestResult& r) {
  const ModelBenchInfo& m = r.model;
  std::string s = printf_string("## Longest sequence: %s, one training step, %d x %s, %s, activation checkpointing %s\n\n",
                                model_title(m).c_str(), r.ranks, r.device.c_str(), m.dtype.c_str(),
                                m.checkpoint ? "on" : "off");
  s += printf_string(
      "Lengths double from the start (1 GPU: %lld tokens; N GPUs: %lld) until a step does not fit (an "
      "out-of-memory error%s), then bisection narrows "
      "the gap to the unit; at most %lld tokens. 1 GPU: dilated on the whole sequence (every rank tries alone at the "
      "same time; a length fits when it fits on all). N GPUs: dilated_parallel, each rank's chunk a whole number of "
      "the longest segment (%s), hence the larger unit. Each try: %d warm-up step(s), which create the optimizer "
      "state, then %d timed; batch 1, AdamW, gradients averaged over the ranks. Memory is returned to the device "
      "between tries. Peak: the framework allocator's high-water mark over the timed steps, the largest over ranks.\n\n",
      static_cast<long long>(r.start), static_cast<long long>(r.start_n),
      r.memory_limit_bytes > 0 ? printf_string(", or a peak over %.3g GiB", r.memory_limit_bytes / kMiB / 1024.0).c_str() : "",
      static_cast<long long>(r.max), m.schedule.c_str(), m.warmup, m.reps);
  s += "| attention | GPUs | unit | longest sequence | tokens per GPU | ms / step | tokens/s | peak MiB per GPU | first "
       "that did not fit | tries |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|\n";
  for (const LongestRow& row : r.rows) {
    const std::string failure =
        row.first_failure > 0 ? printf_string("%lld (%s)", static_cast<long long>(row.first_failure), row.failure.c_str())
                              : "none up to the bound";
    if (row.longest > 0) {
      s += printf_string("| %s | %d | %lld | %lld | %lld | %.1f | %.0f | %.0f | %s | %d |\n", row.core.c_str(), row.gpus,
                         static_cast<long long>(row.unit), static_cast<long long>(row.longest),
                         static_cast<long long>(row.per_gpu), row.step.ms, row.tokens_per_s, row.step.peak_mib,
                         failure.c_str(), row.tries);
    } else {
      s += printf_string("| %s | %d | %lld | none fits | - | - | - | - | %s | %d |\n", row.core.c_str(), row.gpus,
                         static_cast<long long>(row.unit), failure.c_str(), row.tries);
    }
  }
  if (r.rows.size() > 1 && r.rows.front().longest > 0) {
    const LongestRow& one = r.rows.front();
    const LongestRow& all = r.rows.back();
    s += printf_string(
        "\n%d GPUs train on %.2fx the longest sequence of one (ideal: %dx; each GPU's chunk is a multiple of %lld "
        "tokens, which can cost up to that much per GPU against the one-GPU search's finer unit).\n",
        all.gpus, static_cast<double>(all.longest) / static_cast<double>(one.longest), all.gpus,
        static_cast<long long>(all.unit / all.gpus));
  }
  s += "\n";
  return s;
}

}  // namespace longnet::tools
