#include <memory>

#include "tools/longnet/bench_attention.h"
#include "tools/longnet/bench_cpu.h"
#include "tools/longnet/bench_decode.h"
#include "tools/longnet/bench_dist.h"
#include "tools/longnet/bench_gemm.h"
#include "tools/longnet/bench_model.h"
#include "tools/longnet/bench_ops.h"
#include "tools/longnet/bench_train.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/registry.h"

namespace longnet::tools {

void register_bench(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Performance benchmarks (tables)");
  bench->require_subcommand(1);
  register_bench_gemm(*bench);
  register_bench_ops(*bench);
  register_bench_attention(*bench);
  register_bench_model(*bench);
  register_bench_train(*bench);
  register_bench_decode(*bench);
  register_bench_dist(*bench);

  auto cpu_opt = std::make_shared<CpuBenchOptions>();
  CLI::App* cpu = bench->add_subcommand("cpu", "CPU engine: GEMM and LayerNorm throughput");
  cpu->add_option("--threads", cpu_opt->threads, "Threads: OpenMP, and OpenBLAS for the direct baseline (default: all cores)");
  cpu->add_option("--reps", cpu_opt->reps, "Timed repetitions per case, after warm-up");
  cpu->add_flag("--quick", cpu_opt->quick, "Small shapes (smoke test)");
  on_run(cpu, [cpu_opt] { return run_cpu_bench(*cpu_opt); });
}

}  // namespace longnet::tools
