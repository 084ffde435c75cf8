#include "tools/longnet/bench_attention.h"

#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "framework/core/error.h"
#include "layers/attention/pattern.h"
#include "tools/longnet/bench_attention_time.h"
#include "tools/longnet/registry.h"

namespace longnet::tools {
namespace {

struct AttentionBenchOptions {
  bool show_pattern = false;
  std::string core = "dilated";
  std::vector<int64_t> segments{8, 16, 32};
  std::vector<int64_t> dilations{1, 2, 4};
  int64_t seq_len = 64;
  std::vector<int64_t> heads{0};
  bool causal = false;
  int64_t block = 16;
  BlockPattern pattern;
  double sparsity = 0.5;
  int64_t head_dim = 64;
  uint64_t seed = 0;
  int64_t max_cells = 128;
  std::string out = "attention_pattern.svg";
};

int show_pattern(const AttentionBenchOptions& o) {
  LN_CHECK(o.seq_len >= 1, "bench attention: --seq-len must be at least 1, got ", o.seq_len);
  LN_CHECK(o.core != "dilated" || o.segments.size() == o.dilations.size(), "bench attention: --segments has ", o.segments.size(),
           " values but --dilations has ", o.dilations.size(), "; they pair up as (w_i, r_i)");
  const std::vector<std::string> known = attention_core_names();
  if (std::find(known.begin(), known.end(), o.core) == known.end()) {
    std::string list;
    for (const std::string& n : known) list += (list.empty() ? "" : ", ") + n;
    LN_FAIL("bench attention: unknown --core '", o.core, "'; known cores: ", list);
  }
  PatternSpec spec;
  spec.core = o.core;
  spec.config.segment_lengths = o.segments;
  spec.config.dilation_rates = o.dilations;
  spec.config.block_size = o.block;
  spec.config.pattern = o.pattern;
  spec.config.sparsity = o.sparsity;
  spec.config.head_dim = o.head_dim;
  spec.config.seed = o.seed;
  spec.seq_len = o.seq_len;
  spec.heads = o.heads;
  spec.causal = o.causal;
  spec.input_seed = o.seed;
  const AttentionPattern pattern = attention_pattern(spec);
  std::ofstream file(o.out);
  LN_CHECK(file.good(), "bench attention: cannot write '", o.out, "'");
  file << pattern_svg(pattern, o.max_cells);
  file.close();
  LN_CHECK(file.good(), "bench attention: writing '", o.out, "' failed");
  std::cout << pattern.core_label << " (" << pattern.sequence_label << "): wrote " << o.out << "\n";
  return 0;
}

}  // namespace

void register_bench_attention(CLI::App& bench) {
  auto o = std::make_shared<AttentionBenchOptions>();
  CLI::App* sub = bench.add_subcommand("attention", "Attention cores; --show-pattern draws what a core attends to (SVG)");
  sub->add_flag("--show-pattern", o->show_pattern, "Write an SVG of the attended (query, key) pairs");
  sub->add_option("--core", o->core, "Core: dense, dilated, block_sparse, adaptive");
  sub->add_option("--segments", o->segments, "dilated: segment lengths w_i, comma separated")->delimiter(',');
  sub->add_option("--dilations", o->dilations, "dilated: dilation rates r_i, one per segment length")->delimiter(',');
  sub->add_option("--seq-len", o->seq_len, "Sequence length N");
  sub->add_option("--heads", o->heads, "Heads to draw, one panel each, comma separated")->delimiter(',');
  sub->add_flag("--causal", o->causal, "Causal attention");
  sub->add_option("--block", o->block, "block_sparse, adaptive: rows per block");
  sub->add_option("--pattern", o->pattern.kind, "block_sparse: local, dilated, global_local, random, hierarchical");
  sub->add_option("--window", o->pattern.window, "block_sparse: blocks (or dilated steps) visited on each side");
  sub->add_option("--block-dilation", o->pattern.dilation, "block_sparse dilated: distance between visited blocks");
  sub->add_option("--global-blocks", o->pattern.global_blocks, "block_sparse global_local, hierarchical: global blocks");
  sub->add_option("--random-blocks", o->pattern.random_blocks, "block_sparse random: blocks drawn per query block");
  sub->add_option("--levels", o->pattern.levels, "block_sparse hierarchical: number of scales");
  sub->add_option("--level-factor", o->pattern.level_factor, "block_sparse hierarchical: stride growth per scale");
  sub->add_option("--sparsity", o->sparsity, "adaptive: fraction of key blocks left out");
  sub->add_option("--head-dim", o->head_dim, "Head dim of the probe (adaptive: of its scorer)");
  sub->add_option("--seed", o->seed, "Seed: random block draws, the adaptive scorer and the probe's q, k");
  sub->add_option("--max-cells", o->max_cells, "Longer sequences are drawn in this many cells per side");
  sub->add_option("--out", o->out, "SVG file to write");
  const std::shared_ptr<AttentionTimeOptions> timing = add_attention_time_options(sub);
  on_run(sub, [o, sub, timing] {
    if (timing->time) return run_attention_time(*timing);
    if (!o->show_pattern) {
      std::cerr << "bench attention: choose a mode (--show-pattern or --time)\n" << sub->help();
      return 2;
    }
    o->pattern.seed = o->seed;
    return show_pattern(*o);
  });
}

}  // namespace longnet::tools
