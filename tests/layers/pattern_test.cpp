// Attention pattern pictures: the probed masks of the cores against their rules written out here
// (dense, the paper's dilated rule by hand, block layouts, the adaptive core's chosen blocks), the
// probe against the cores' gradients, the SVG's structure, and the `bench attention` command.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>


#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "layers/attention/adaptive.h"
#include "layers/attention/block_sparse.h"
#include "layers/attention/pattern.h"
#include "tests/support/program.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using Pairs = std::set<std::pair<int64_t, int64_t>>;

AttentionConfig dilated_config(std::vector<int64_t> w, std::vector<int64_t> r) {
  AttentionConfig c;
  c.segment_lengths = std::move(w);
  c.dilation_rates = std::move(r);
  c.head_dim = 8;
  return c;
}

std::vector<uint8_t> probe(const std::string& name, const AttentionConfig& c, int64_t n, int64_t heads, bool causal) {
  auto core = make_attention_core(name, c);
  return probe_attention_mask(*core, n, heads, causal, c.head_dim, 7);
}

// The (query, key) pairs of head h in a (heads, n, n) mask.
Pairs pairs_of(const std::vector<uint8_t>& mask, int64_t n, int64_t h) {
  Pairs out;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      if (mask[static_cast<size_t>((h * n + i) * n + j)]) out.insert({i, j});
    }
  }
  return out;
}

Pairs without_future(const Pairs& p) {
  Pairs out;
  for (const auto& [i, j] : p) {
    if (j <= i) out.insert({i, j});
  }
  return out;
}

TEST(AttentionPattern, DenseSeesEveryKeyOrThePast) {
  AttentionConfig c;
  c.head_dim = 8;
  const int64_t n = 19;  // more keys than the probe's head dim: three one-hot chunks
  for (bool causal : {false, true}) {
    const std::vector<uint8_t> mask = probe("dense", c, n, 2, causal);
    for (int64_t h = 0; h < 2; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          EXPECT_EQ(mask[static_cast<size_t>((h * n + i) * n + j)], causal ? (j <= i ? 1 : 0) : 1)
              << "causal " << causal << " head " << h << " (" << i << ", " << j << ")";
        }
      }
    }
  }
}

TEST(AttentionPattern, DilatedWholeSegmentWithoutDilationIsDense) {
  const int64_t n = 21;
  AttentionConfig dense;
  dense.head_dim = 8;
  for (bool causal : {false, true}) {
    const auto want = probe("dense", dense, n, 3, causal);
    EXPECT_EQ(probe("dilated", dilated_config({n}, {1}), n, 3, causal), want);
    EXPECT_EQ(probe("dilated", dilated_config({4096}, {1}), n, 3, causal), want);  // clamped to N
  }
}

TEST(AttentionPattern, DilatedMatchesThePapersRuleByHand) {
  // w = 4, r = 2: segments [0, 4) and [4, 8); head h keeps the rows at offset h mod 2 of each.
  const Pairs head0{{0, 0}, {0, 2}, {2, 0}, {2, 2}, {4, 4}, {4, 6}, {6, 4}, {6, 6}};
  const Pairs head1{{1, 1}, {1, 3}, {3, 1}, {3, 3}, {5, 5}, {5, 7}, {7, 5}, {7, 7}};
  // Head 2 has offset 0 again.
  for (bool causal : {false, true}) {
    const auto mask = probe("dilated", dilated_config({4}, {2}), 8, 3, causal);
    EXPECT_EQ(pairs_of(mask, 8, 0), causal ? without_future(head0) : head0);
    EXPECT_EQ(pairs_of(mask, 8, 1), causal ? without_future(head1) : head1);
    EXPECT_EQ(pairs_of(mask, 8, 2), causal ? without_future(head0) : head0);
  }
  // N = 7: the last segment [4, 7) is short; head 1 keeps only row 5 of it.
  const auto ragged = probe("dilated", dilated_config({4}, {2}), 7, 2, false);
  EXPECT_EQ(pairs_of(ragged, 7, 0), Pairs({{0, 0}, {0, 2}, {2, 0}, {2, 2}, {4, 4}, {4, 6}, {6, 4}, {6, 6}}));
  EXPECT_EQ(pairs_of(ragged, 7, 1), Pairs({{1, 1}, {1, 3}, {3, 1}, {3, 3}, {5, 5}}));
}

TEST(AttentionPattern, DilatedBranchesAreTold) {
  // Branch 1 (w 2, r 1): pairs within [0, 2) and [2, 4). Branch 2 (w 4, r 2), head 0: rows 0, 2.
  PatternSpec spec;
  spec.config = dilated_config({2, 4}, {1, 2});
  spec.seq_len = 4;
  spec.heads = {0};
  const AttentionPattern p = attention_pattern(spec);
  EXPECT_EQ(p.branches, (std::vector<std::string>{"w = 2, r = 1", "w = 4, r = 2"}));
  const std::vector<uint8_t> want{1, 1, 2, 0,   // query 0: (0, 0) is in both, the first branch names it
                                  1, 1, 0, 0,   // query 1
                                  2, 0, 1, 1,   // query 2
                                  0, 0, 1, 1};  // query 3
  EXPECT_EQ(p.cover[0], want);
  EXPECT_NE(p.core_label.find("w = 2, 4; r = 1, 2"), std::string::npos) << p.core_label;
}

TEST(AttentionPattern, MaskIsWhereOneQuerysLseHasKeyGradients) {
  // d lse_i / d k_j = scale * P_ij * q_i: nonzero exactly for the keys query i attends to.
  const int64_t n = 12, heads = 3, dim = 8;
  auto core = make_attention_core("dilated", dilated_config({4, 8}, {1, 3}));
  for (bool causal : {false, true}) {
    const std::vector<uint8_t> mask = probe_attention_mask(*core, n, heads, causal, dim, 3);
    const Tensor q = testing::leaf({1, n, heads, dim}, 1), k = testing::leaf({1, n, heads, dim}, 2),
                 v = testing::leaf({1, n, heads, dim}, 3);
    AttentionOptions o;
    o.causal = causal;
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        const AttentionResult r = core->forward(q, k, v, o);
        sum(r.lse.narrow(1, h, 1).narrow(2, i, 1)).backward();
        const std::vector<double> dk = k.grad().to_vector<double>();
        k.set_grad(Tensor());
        q.set_grad(Tensor());
        v.set_grad(Tensor());
        for (int64_t j = 0; j < n; ++j) {
          bool nonzero = false;
          for (int64_t d = 0; d < dim; ++d) nonzero = nonzero || dk[static_cast<size_t>((j * heads + h) * dim + d)] != 0.0;
          EXPECT_EQ(nonzero, mask[static_cast<size_t>((h * n + i) * n + j)] != 0)
              << "causal " << causal << " head " << h << " (" << i << ", " << j << ")";
        }
      }
    }
  }
}

TEST(AttentionPattern, BlockSparseMaskIsItsLayout) {
  const int64_t n = 45, block = 8, heads = 2;  // 6 blocks, the last one short
  for (const std::string kind : {"local", "dilated", "global_local", "random", "hierarchical"}) {
    for (bool causal : {false, true}) {
      AttentionConfig c;
      c.block_size = block;
      c.head_dim = 8;
      c.pattern.kind = kind;
      c.pattern.seed = 5;
      c.pattern.level_factor = 2;
      BlockSparseAttention core(c);
      const std::vector<uint8_t> mask = probe_attention_mask(core, n, heads, causal, c.head_dim, 1);
      const AttentionLayout& l = *core.layout(n, heads, causal);
      for (int64_t h = 0; h < heads; ++h) {
        Pairs want;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t row = l.row(0, l.heads == 1 ? 0 : h, i / block);
          for (auto x = l.row_offsets[static_cast<size_t>(row)]; x < l.row_offsets[static_cast<size_t>(row) + 1]; ++x) {
            const int64_t kb = l.key_block_ids[static_cast<size_t>(x)];
            for (int64_t j = kb * block; j < std::min(n, (kb + 1) * block); ++j) {
              if (!causal || j <= i) want.insert({i, j});
            }
          }
        }
        EXPECT_EQ(pairs_of(mask, n, h), want) << kind << " causal " << causal << " head " << h;
      }
    }
  }
}

TEST(AttentionPattern, AdaptiveMaskIsTheChosenBlocks) {
  AttentionConfig c;
  c.block_size = 4;
  c.sparsity = 0.5;
  c.head_dim = 8;
  c.seed = 11;
  AdaptiveAttention core(c);
  const int64_t n = 30, heads = 2;
  const std::vector<uint8_t> mask = probe_attention_mask(core, n, heads, false, c.head_dim, 4);
  const AttentionLayout& l = *core.last_layout();
  ASSERT_EQ(l.heads, heads);
  int64_t kept = 0;
  for (int64_t h = 0; h < heads; ++h) {
    Pairs want;
    for (int64_t i = 0; i < n; ++i) {
      const auto row = static_cast<size_t>(l.row(0, h, i / 4));
      for (auto x = l.row_offsets[row]; x < l.row_offsets[row + 1]; ++x) {
        const int64_t kb = l.key_block_ids[static_cast<size_t>(x)];
        for (int64_t j = kb * 4; j < std::min(n, kb * 4 + 4); ++j) want.insert({i, j});
      }
    }
    kept += static_cast<int64_t>(want.size());
    EXPECT_EQ(pairs_of(mask, n, h), want) << "head " << h;
  }
  EXPECT_LT(kept, heads * n * n);  // the picture is sparse, not dense
}

// Checks that every element opened in `svg` is closed in order; returns the number of elements.
int64_t balanced_elements(const std::string& svg) {
  std::vector<std::string> open;
  int64_t elements = 0;
  for (size_t at = svg.find('<'); at != std::string::npos; at = svg.find('<', at + 1)) {
    const size_t end = svg.find('>', at);
    EXPECT_NE(end, std::string::npos);
    if (end == std::string::npos) return -1;
    const std::string tag = svg.substr(at + 1, end - at - 1);
    const std::string name = tag.substr(tag[0] == '/', tag.find_first_of(" /", 1) - (tag[0] == '/'));
    if (tag[0] == '/') {
      EXPECT_FALSE(open.empty()) << "</" << name << "> closes nothing";
      if (open.empty()) return -1;
      EXPECT_EQ(open.back(), name);
      open.pop_back();
    } else {
      ++elements;
      if (tag.back() != '/') open.push_back(name);
    }
  }
  EXPECT_TRUE(open.empty()) << open.size() << " elements left open";
  return elements;
}

TEST(AttentionPattern, SvgIsWellFormedWithLegendAndTitle) {
  PatternSpec spec;
  spec.config = dilated_config({8, 16}, {1, 2});
  spec.seq_len = 32;
  spec.heads = {0, 1};
  spec.causal = true;
  const std::string svg = pattern_svg(attention_pattern(spec));
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_GT(balanced_elements(svg), 10);
  for (const std::string text : {"dilated: w = 8, 16; r = 1, 2", "N = 32, causal", "head 0", "head 1", "w = 8, r = 1",
                                 "w = 16, r = 2", "query position", "key position"}) {
    EXPECT_NE(svg.find(text), std::string::npos) << text;
  }
  // Downsampled: 3 positions a cell, shaded by the attended fraction.
  spec.seq_len = 96;
  const std::string small = pattern_svg(attention_pattern(spec), 32);
  EXPECT_GT(balanced_elements(small), 10);
  EXPECT_NE(small.find("fill-opacity"), std::string::npos);
  EXPECT_NE(small.find("a cell is 3 positions square"), std::string::npos);
}

TEST(AttentionPattern, ErrorsNameTheProblem) {
  PatternSpec spec;
  spec.core = "nope";
  EXPECT_NE(testing::error_message([&] { attention_pattern(spec); }).find("unknown core 'nope'"), std::string::npos);
  spec.core = "dilated";
  spec.config = dilated_config({8, 16}, {1});
  EXPECT_NE(testing::error_message([&] { attention_pattern(spec); }).find("as many segment lengths as dilation rates"),
            std::string::npos);
  spec.config = dilated_config({8}, {1});
  spec.seq_len = 0;
  EXPECT_NE(testing::error_message([&] { attention_pattern(spec); }).find("sequence length must be in [1, "),
            std::string::npos);
  spec.seq_len = 8;
  spec.heads = {-1};
  EXPECT_NE(testing::error_message([&] { attention_pattern(spec); }).find("head index"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The command, run as a user would: the longnet program of the same build tree.

using testing::longnet_program;
using testing::run_longnet;

TEST(BenchAttentionCommand, ShowPatternWritesAnSvgAndRejectsBadOptions) {
  if (!std::filesystem::exists(longnet_program())) GTEST_SKIP() << "build the longnet target first";
  const std::filesystem::path out = std::filesystem::temp_directory_path() / "longnet_pattern_test.svg";
  std::filesystem::remove(out);
  std::string output;
  EXPECT_EQ(run_longnet("bench attention --show-pattern --core dilated --segments 8,16,32 --dilations 1,2,4 "
                        "--seq-len 64 --heads 0,1,2 --causal --out " + out.string(), output), 0) << output;
  std::ifstream in(out);
  std::stringstream svg;
  svg << in.rdbuf();
  EXPECT_EQ(svg.str().rfind("<svg", 0), 0u);
  EXPECT_NE(svg.str().find("w = 32, r = 4"), std::string::npos);
  std::filesystem::remove(out);
  EXPECT_EQ(run_longnet("bench attention --show-pattern --core block_sparse --pattern random --block 16 --seq-len 64 "
                        "--out " + out.string(), output), 0) << output;
  EXPECT_TRUE(std::filesystem::exists(out));
  std::filesystem::remove(out);

  const std::vector<std::pair<std::string, std::string>> bad{
      {"--core nope", "unknown --core 'nope'; known cores: adaptive, block_sparse, dense, dilated"},
      {"--segments 8,16 --dilations 1", "--segments has 2 values but --dilations has 1"},
      {"--seq-len 0", "--seq-len must be at least 1, got 0"},
      {"--core block_sparse --pattern diagonal", "unknown pattern 'diagonal'"}};
  for (const auto& [args, message] : bad) {
    EXPECT_NE(run_longnet("bench attention --show-pattern " + args + " --out " + out.string(), output), 0) << args;
    EXPECT_NE(output.find(message), std::string::npos) << args << ": " << output;
    EXPECT_FALSE(std::filesystem::exists(out)) << args;
  }
  EXPECT_EQ(run_longnet("bench attention --core dense", output), 2);  // no mode chosen
  EXPECT_NE(output.find("--show-pattern"), std::string::npos) << output;
}

}  // namespace
}  // namespace longnet
