#include "layers/attention/pattern.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "framework/autograd/grad_mode.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"
#include "layers/attention/dilated.h"

namespace longnet {
namespace {

// Beyond this the (heads, n, n) masks and the n / head_dim probes stop being a quick picture.
constexpr int64_t kMaxSeqLen = 8192;

template <class T>
std::string joined(const std::vector<T>& xs) {
  std::ostringstream s;
  for (size_t i = 0; i < xs.size(); ++i) s << (i ? ", " : "") << xs[i];
  return s.str();
}

std::string pattern_label(const BlockPattern& p) {
  std::ostringstream s;
  s << "pattern " << p.kind;
  if (p.kind == "local" || p.kind == "global_local" || p.kind == "dilated" || p.kind == "hierarchical") {
    s << ", window " << p.window;
  }
  if (p.kind == "dilated") s << ", dilation " << p.dilation;
  if (p.kind == "global_local" || p.kind == "hierarchical") s << ", global " << p.global_blocks;
  if (p.kind == "hierarchical") s << ", levels " << p.levels << ", factor " << p.level_factor;
  if (p.kind == "random") s << ", " << p.random_blocks << " random, seed " << p.seed;
  return s.str();
}

std::string core_label(const PatternSpec& spec, const AttentionCore& core) {
  const AttentionConfig& c = spec.config;
  std::ostringstream s;
  s << core.name();
  if (const auto* d = dynamic_cast<const DilatedAttention*>(&core)) {
    s << ": w = " << joined(d->segment_lengths()) << "; r = " << joined(d->dilation_rates());
  } else if (core.name() == "block_sparse") {
    s << ": block " << c.block_size << ", " << pattern_label(c.pattern);
  } else if (core.name() == "adaptive") {
    s << ": block " << c.block_size << ", sparsity " << c.sparsity << ", scorer seed " << c.seed << ", input seed "
      << spec.input_seed;
  }
  return s.str();
}

std::string xml_escaped(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '&') out += "&amp;";
    else if (ch == '<') out += "&lt;";
    else if (ch == '>') out += "&gt;";
    else if (ch == '"') out += "&quot;";
    else out += ch;
  }
  return out;
}

std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

// Colours of the branches (cycled past ten).
const char* branch_colour(size_t b) {
  static const char* palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};
  return palette[b % (sizeof palette / sizeof palette[0])];
}

}  // namespace

std::vector<uint8_t> probe_attention_mask(AttentionCore& core, int64_t n, int64_t heads, bool causal, int64_t head_dim,
                                          uint64_t seed) {
  LN_CHECK(n > 0 && heads > 0 && head_dim > 0, "[pattern] probe needs positive sizes, got n ", n, ", heads ", heads,
           ", head dim ", head_dim);
  NoGradGuard no_grad;
  Generator g(seed);
  // Small scores keep every visible key's probability far from underflow.
  const Tensor q = mul(randn({1, n, heads, head_dim}, DType::F32, Device::cpu(), &g), 0.1);
  const Tensor k = mul(randn({1, n, heads, head_dim}, DType::F32, Device::cpu(), &g), 0.1);
  AttentionOptions options;
  options.causal = causal;
  std::vector<uint8_t> mask(static_cast<size_t>(heads * n * n), 0);
  // Keys [c0, c0 + head_dim) carry one-hot values, the others zero: output column c of query i is
  // then exactly its probability of key c0 + c.
  for (int64_t c0 = 0; c0 < n; c0 += head_dim) {
    const int64_t width = std::min(head_dim, n - c0);
    std::vector<float> values(static_cast<size_t>(n * heads * head_dim), 0.0f);
    for (int64_t j = c0; j < c0 + width; ++j) {
      for (int64_t h = 0; h < heads; ++h) values[static_cast<size_t>((j * heads + h) * head_dim + (j - c0))] = 1.0f;
    }
    const Tensor v = from_vector(values, {1, n, heads, head_dim});
    const std::vector<float> out = core.forward(q, k, v, options).out.contiguous().to_vector<float>();
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < heads; ++h) {
        const float* row = out.data() + (i * heads + h) * head_dim;
        for (int64_t c = 0; c < width; ++c) {
          if (row[c] != 0.0f) mask[static_cast<size_t>((h * n + i) * n + c0 + c)] = 1;
        }
      }
    }
  }
  return mask;
}

AttentionPattern attention_pattern(const PatternSpec& spec) {
  const int64_t n = spec.seq_len;
  LN_CHECK(n >= 1 && n <= kMaxSeqLen, "[pattern] sequence length must be in [1, ", kMaxSeqLen, "], got ", n);
  LN_CHECK(!spec.heads.empty(), "[pattern] no heads to show");
  for (int64_t h : spec.heads) LN_CHECK(h >= 0 && h < 256, "[pattern] head index must be in [0, 256), got ", h);
  const int64_t heads = *std::max_element(spec.heads.begin(), spec.heads.end()) + 1;
  const int64_t dim = spec.config.head_dim;

  std::unique_ptr<AttentionCore> core = make_attention_core(spec.core, spec.config);
  AttentionPattern p;
  p.core_label = core_label(spec, *core);
  p.sequence_label = "N = " + std::to_string(n) + (spec.causal ? ", causal" : ", bidirectional");
  p.seq_len = n;
  p.heads = spec.heads;
  const std::vector<uint8_t> whole = probe_attention_mask(*core, n, heads, spec.causal, dim, spec.input_seed);

  // The branches' masks, in schedule order; a core without branches is its own single branch.
  std::vector<std::vector<uint8_t>> branch_masks;
  if (const auto* d = dynamic_cast<const DilatedAttention*>(core.get())) {
    for (size_t b = 0; b < d->segment_lengths().size(); ++b) {
      AttentionConfig c = spec.config;
      c.segment_lengths = {d->segment_lengths()[b]};
      c.dilation_rates = {d->dilation_rates()[b]};
      DilatedAttention branch(c);
      branch_masks.push_back(probe_attention_mask(branch, n, heads, spec.causal, dim, spec.input_seed));
      p.branches.push_back("w = " + std::to_string(c.segment_lengths[0]) + ", r = " + std::to_string(c.dilation_rates[0]));
    }
  } else {
    branch_masks.push_back(whole);
    p.branches.push_back(core->name() == "block_sparse" || core->name() == "adaptive" ? "attended blocks" : "attended");
  }
  LN_CHECK(p.branches.size() < 255, "[pattern] at most 254 branches can be told apart, got ", p.branches.size());

  for (int64_t h : spec.heads) {
    std::vector<uint8_t> cover(static_cast<size_t>(n * n), 0);
    for (int64_t x = 0; x < n * n; ++x) {
      const auto at = static_cast<size_t>(h * n * n + x);
      for (size_t b = 0; b < branch_masks.size() && !cover[static_cast<size_t>(x)]; ++b) {
        if (branch_masks[b][at]) cover[static_cast<size_t>(x)] = static_cast<uint8_t>(b + 1);
      }
      // Eq. 10: the core attends to exactly the union of its branches' keys.
      LN_CHECK((cover[static_cast<size_t>(x)] != 0) == (whole[at] != 0), "[pattern] ", core->name(),
               ": the branches' union differs from the core's mask at head ", h, ", query ", x / n, ", key ", x % n);
    }
    p.cover.push_back(std::move(cover));
  }
  return p;
}

std::string pattern_svg(const AttentionPattern& p, int64_t max_cells) {
  LN_CHECK(max_cells >= 1, "[pattern] max_cells must be positive, got ", max_cells);
  LN_CHECK(p.seq_len >= 1 && p.cover.size() == p.heads.size(), "[pattern] empty or inconsistent pattern");
  const int64_t n = p.seq_len, cells = std::min(n, max_cells);
  const double grid = 360.0, cell = grid / static_cast<double>(cells);
  const double left = 80.0, gap = 80.0, top = 116.0;
  const auto panels = static_cast<int64_t>(p.heads.size());
  // Wide enough for the title too (about 9 px per character of the bold 16 px font).
  const double title_width = left + 9.0 * static_cast<double>(p.core_label.size()) + 20.0;
  const double width = std::max({left + static_cast<double>(panels) * (grid + gap) - gap + 20.0, 640.0, title_width});
  const auto legend_rows = static_cast<int64_t>((p.branches.size() + 3) / 4);
  const double legend_top = top + grid + 28.0;
  const double height = legend_top + 22.0 * static_cast<double>(legend_rows) + 30.0;
  const auto bound = [&](int64_t c) { return c * n / cells; };  // first position of cell c

  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(width) << "\" height=\"" << num(height)
    << "\" viewBox=\"0 0 " << num(width) << " " << num(height) << "\" font-family=\"sans-serif\" shape-rendering=\"crispEdges\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  s << "<text x=\"" << num(left) << "\" y=\"28\" font-size=\"16\" font-weight=\"bold\">" << xml_escaped(p.core_label)
    << "</text>\n";
  s << "<text x=\"" << num(left) << "\" y=\"48\" font-size=\"12\" fill=\"#444444\">" << xml_escaped(p.sequence_label)
    << "</text>\n";

  for (int64_t panel = 0; panel < panels; ++panel) {
    const double x0 = left + static_cast<double>(panel) * (grid + gap), mid = x0 + grid / 2.0;
    const std::vector<uint8_t>& cover = p.cover[static_cast<size_t>(panel)];
    s << "<g>\n<text x=\"" << num(mid) << "\" y=\"76\" font-size=\"13\" font-weight=\"bold\" text-anchor=\"middle\">head "
      << p.heads[static_cast<size_t>(panel)] << "</text>\n";
    s << "<text x=\"" << num(mid) << "\" y=\"94\" font-size=\"11\" text-anchor=\"middle\">key position \u2192</text>\n";
    s << "<text x=\"" << num(x0 - 42) << "\" y=\"" << num(top + grid / 2.0)
      << "\" font-size=\"11\" text-anchor=\"middle\" transform=\"rotate(-90 " << num(x0 - 42) << " "
      << num(top + grid / 2.0) << ")\">query position \u2193</text>\n";
    for (int64_t t = 0; t <= 4; ++t) {
      const int64_t pos = t * n / 4;
      const double at = grid * static_cast<double>(pos) / static_cast<double>(n);
      s << "<text x=\"" << num(x0 + at) << "\" y=\"" << num(top - 6) << "\" font-size=\"9\" text-anchor=\"middle\">" << pos
        << "</text><text x=\"" << num(x0 - 4) << "\" y=\"" << num(top + at + 3)
        << "\" font-size=\"9\" text-anchor=\"end\">" << pos << "</text>\n";
    }
    s << "<rect x=\"" << num(x0) << "\" y=\"" << num(top) << "\" width=\"" << num(grid) << "\" height=\"" << num(grid)
      << "\" fill=\"#f7f7f7\"/>\n";
    // One rect per run of equal cells along a row keeps the file small.
    for (int64_t ci = 0; ci < cells; ++ci) {
      int64_t run_start = 0;
      std::string run_style;
      const auto flush = [&](int64_t end) {
        if (!run_style.empty()) {
          s << "<rect x=\"" << num(x0 + cell * static_cast<double>(run_start)) << "\" y=\""
            << num(top + cell * static_cast<double>(ci)) << "\" width=\"" << num(cell * static_cast<double>(end - run_start))
            << "\" height=\"" << num(cell) << "\" " << run_style << "/>\n";
        }
      };
      for (int64_t cj = 0; cj <= cells; ++cj) {
        std::string style;
        if (cj < cells) {
          std::vector<int64_t> counts(p.branches.size(), 0);
          int64_t attended = 0;
          for (int64_t i = bound(ci); i < bound(ci + 1); ++i) {
            for (int64_t j = bound(cj); j < bound(cj + 1); ++j) {
              const uint8_t b = cover[static_cast<size_t>(i * n + j)];
              if (b) {
                ++counts[b - 1];
                ++attended;
              }
            }
          }
          if (attended > 0) {
            const auto best = static_cast<size_t>(std::max_element(counts.begin(), counts.end()) - counts.begin());
            const double fraction = static_cast<double>(attended) /
                                    static_cast<double>((bound(ci + 1) - bound(ci)) * (bound(cj + 1) - bound(cj)));
            style = std::string("fill=\"") + branch_colour(best) + "\"";
            if (fraction < 1.0) style += " fill-opacity=\"" + num(0.2 + 0.8 * fraction) + "\"";
          }
        }
        if (style != run_style) {
          flush(cj);
          run_start = cj;
          run_style = style;
        }
      }
    }
    s << "<rect x=\"" << num(x0) << "\" y=\"" << num(top) << "\" width=\"" << num(grid) << "\" height=\"" << num(grid)
      << "\" fill=\"none\" stroke=\"#888888\"/>\n</g>\n";
  }

  s << "<g font-size=\"12\">\n";
  for (size_t b = 0; b < p.branches.size(); ++b) {
    const double x = left + 150.0 * static_cast<double>(b % 4), y = legend_top + 22.0 * static_cast<double>(b / 4);
    s << "<rect x=\"" << num(x) << "\" y=\"" << num(y - 11) << "\" width=\"14\" height=\"14\" fill=\"" << branch_colour(b)
      << "\"/><text x=\"" << num(x + 20) << "\" y=\"" << num(y) << "\">" << xml_escaped(p.branches[b]) << "</text>\n";
  }
  std::string note = cells == n ? "one cell per (query, key) pair"
                                : "a cell is " + num(static_cast<double>(n) / static_cast<double>(cells)) +
                                      " positions square, shaded by the fraction of its pairs attended";
  if (p.branches.size() > 1) note += "; a pair takes the colour of the first branch that covers it";
  s << "<text x=\"" << num(left) << "\" y=\"" << num(legend_top + 22.0 * static_cast<double>(legend_rows))
    << "\" font-size=\"10\" fill=\"#444444\">" << xml_escaped(note) << "</text>\n</g>\n</svg>\n";
  return s.str();
}

}  // namespace longnet
