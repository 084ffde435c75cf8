#include "tools/longnet/bench_gemm.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/registry.h"

namespace longnet::tools {

void register_bench(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Performance benchmarks (tables)");
  bench->require_subcommand(1);
  register_bench_gemm(*bench);
}

}  // namespace longnet::tools
