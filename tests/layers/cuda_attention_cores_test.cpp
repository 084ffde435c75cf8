// The attention cores on GPU tensors against the same cores on the CPU: out, lse and the gradients
// of q, k, v in bf16 (the CPU computes in f32 from the same bf16-rounded values), for every core and
// block pattern, causal and not, head dims 64 and 32; and causality of every core on the GPU.
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "layers/attention/adaptive.h"
#include "layers/attention/core.h"
#include "tests/layers/block_patterns.h"
#include "tests/support/gpu.h"

namespace longnet {
namespace {

// ||gpu - cpu|| / ||cpu|| over all elements: bf16 rounding of the operands and results stays well
// below it, a wrong mask or a missing term does not.
constexpr double kMaxRelError = 2e-2;

using CoreMaker = std::function<std::unique_ptr<AttentionCore>()>;

struct Case {
  int64_t n, nk, d;
  bool causal;
  /// Keys at the end of the second batch element that are padding (none when 0).
  int64_t pad = 0;
  /// Whether the loss also depends on lse (else lse gets no gradient, as in a model).
  bool through_lse = true;
};

std::string describe(const Case& c) {
  return "N " + std::to_string(c.n) + ", Nk " + std::to_string(c.nk) + ", D " + std::to_string(c.d) +
         (c.causal ? ", causal" : ", non-causal") + ", padding " + std::to_string(c.pad) +
         (c.through_lse ? ", loss through out and lse" : ", loss through out");
}

// The (2, Nk) key padding mask of a case on `device`, or undefined without padding.
Tensor padding_mask(const Case& c, Device device) {
  if (c.pad == 0) return Tensor();
  std::vector<uint8_t> m(static_cast<size_t>(2 * c.nk), 0);
  for (int64_t j = c.nk - c.pad; j < c.nk; ++j) m[static_cast<size_t>(c.nk + j)] = 1;
  return cast(from_vector(m, {2, c.nk}, device), DType::Bool);
}

// q (B, N, H, D), k and v (B, Nk, H, D) on the host, drawn in f32 and rounded to bf16, so that both
// devices start from the same values.
std::vector<Tensor> bf16_inputs(const Case& c, uint64_t seed) {
  constexpr int64_t kBatch = 2, kHeads = 4;
  Generator g(seed);
  std::vector<Tensor> qkv;
  for (int64_t len : {c.n, c.nk, c.nk}) {
    qkv.push_back(cast(randn({kBatch, len, kHeads, c.d}, DType::F32, Device::cpu(), &g), DType::BF16));
  }
  return qkv;
}

struct CoreRun {
  Tensor out, lse, aux_loss, dq, dk, dv;
};

// One forward and backward of `core` with q, k, v as leaves on `device` in `dtype`. The loss
// sum(out * wo) + sum(lse * wl) for a fixed draw of wo, wl sends gradient through out and lse
// (through out alone without the second term).
CoreRun run_core(AttentionCore& core, const std::vector<Tensor>& host_qkv, Device device, DType dtype, const Case& c) {
  std::vector<Tensor> leaves;
  for (const Tensor& t : host_qkv) {
    Tensor l = cast(t, dtype).to(device).clone();
    l.requires_grad_(true);
    leaves.push_back(l);
  }
  AttentionOptions options;
  options.causal = c.causal;
  options.key_padding_mask = padding_mask(c, device);
  const AttentionResult r = core.forward(leaves[0], leaves[1], leaves[2], options);
  EXPECT_EQ(r.out.device(), device) << core.name();
  EXPECT_EQ(r.out.dtype(), dtype) << core.name();
  Generator g(99);
  const Tensor wo = randn(r.out.shape(), DType::F32, Device::cpu(), &g).to(device);
  const Tensor wl = randn(r.lse.shape(), DType::F32, Device::cpu(), &g).to(device);
  const Tensor through_out = sum(mul(cast(r.out, DType::F32), wo));
  (c.through_lse ? add(through_out, sum(mul(cast(r.lse, DType::F32), wl))) : through_out).backward();
  return {r.out.detach(), r.lse.detach(), r.aux_loss.defined() ? r.aux_loss.detach() : Tensor(),
          leaves[0].grad(), leaves[1].grad(), leaves[2].grad()};
}

// ||a - ref|| / ||ref|| (||a|| when ref is all zeros), on the host in f64.
double rel_error(const Tensor& a, const Tensor& ref) {
  const std::vector<double> x = a.to_vector<double>(), y = ref.to_vector<double>();
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    diff += (x[i] - y[i]) * (x[i] - y[i]);
    norm += y[i] * y[i];
  }
  return std::sqrt(diff) / (norm > 0.0 ? std::sqrt(norm) : 1.0);
}

// The largest |a - b|, on the host.
double max_abs_diff(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  double m = 0.0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, std::abs(x[i] - y[i]));
  return m;
}

// A core built on the CPU and one built with cuda:0 as the default device (where the adaptive core
// puts its scorer), run on the same bf16 values; the GPU results must match the CPU's.
struct CorePair {
  std::unique_ptr<AttentionCore> cpu, gpu;
  CoreRun ref, got;
};

// `gpu_dtype` is what the GPU computes in: bf16 (within kMaxRelError of the CPU) or f32 (within
// 1e-4: both devices then round the same way, up to the order of the sums).
CorePair expect_parity(const CoreMaker& make, const Case& c, const std::string& what, uint64_t seed = 1,
                       DType gpu_dtype = DType::BF16) {
  SCOPED_TRACE(what + ", " + describe(c) + ", GPU in " + dtype_name(gpu_dtype));
  const double tolerance = gpu_dtype == DType::BF16 ? kMaxRelError : 1e-4;
  const std::vector<Tensor> host = bf16_inputs(c, seed);
  CorePair p;
  p.cpu = make();
  {
    DefaultDeviceGuard guard(Device::cuda(0));
    p.gpu = make();
  }
  p.ref = run_core(*p.cpu, host, Device::cpu(), DType::F32, c);
  p.got = run_core(*p.gpu, host, Device::cuda(0), gpu_dtype, c);
  const std::vector<std::pair<const char*, std::pair<Tensor, Tensor>>> pairs{
      {"out", {p.got.out, p.ref.out}}, {"lse", {p.got.lse, p.ref.lse}}, {"dq", {p.got.dq, p.ref.dq}},
      {"dk", {p.got.dk, p.ref.dk}},    {"dv", {p.got.dv, p.ref.dv}}};
  for (const auto& [name, t] : pairs) {
    const bool comparable = t.first.defined() && t.second.defined() && t.first.shape() == t.second.shape();
    EXPECT_TRUE(comparable) << name << " missing or of another shape";
    if (!comparable) continue;
    EXPECT_TRUE(t.first.device().is_cuda()) << name;
    EXPECT_LE(rel_error(t.first, t.second), tolerance) << name;
  }
  return p;
}

// Parity over head dims 64 and 32, causal and not, with `pad` padded keys.
void expect_parity_all(const CoreMaker& make, int64_t n, int64_t nk, const std::string& what, int64_t pad = 0) {
  for (int64_t d : {64, 32}) {
    for (bool causal : {false, true}) expect_parity(make, {n, nk, d, causal, pad}, what);
  }
}

CoreMaker maker(const std::string& name, const AttentionConfig& config) {
  return [name, config] { return make_attention_core(name, config); };
}

AttentionConfig dilated_config(std::vector<int64_t> lengths, std::vector<int64_t> rates) {
  AttentionConfig c;
  c.segment_lengths = std::move(lengths);
  c.dilation_rates = std::move(rates);
  return c;
}

// A block pattern of `kind`: window 1 (2 for dilated, with dilation 2), one global block, two
// random blocks per query block, two levels of factor 2.
BlockPattern pattern(const std::string& kind) { return testing::test_pattern(kind, kind == "dilated" ? 2 : 1); }

AttentionConfig block_config(const BlockPattern& pattern, int64_t block) {
  AttentionConfig c;
  c.block_size = block;
  c.pattern = pattern;
  return c;
}

AttentionConfig adaptive_config(int64_t head_dim) {
  AttentionConfig c;
  c.block_size = 32;
  c.sparsity = 0.5;
  c.head_dim = head_dim;
  c.regularizer = 0.1;
  c.seed = 3;
  return c;
}

TEST(CudaAttentionCores, DenseMatchesCpu) {
  LN_REQUIRE_GPU();
  expect_parity_all(maker("dense", {}), 160, 160, "dense");
  // Fewer queries than keys: causal aligns the last query with the last key.
  expect_parity_all(maker("dense", {}), 64, 160, "dense, cross");
  expect_parity_all(maker("dense", {}), 160, 160, "dense, padded", 9);
}

TEST(CudaAttentionCores, DilatedMatchesCpu) {
  LN_REQUIRE_GPU();
  // 200 and 150 rows are multiples of none of the segment lengths, so every branch has a short
  // last segment (200 = 128 + 72, 150 = 96 + 54).
  expect_parity_all(maker("dilated", dilated_config({32, 64, 128}, {1, 2, 4})), 200, 200, "dilated 3 branches");
  expect_parity_all(maker("dilated", dilated_config({48, 96}, {1, 3})), 150, 150, "dilated 2 branches");
  // Padding read through the branches' strided views of the mask; some pieces see only padding
  // (their lse is -inf and the merge drops them), every row still sees a key in some branch.
  expect_parity_all(maker("dilated", dilated_config({32, 64, 128}, {1, 2, 4})), 200, 200, "dilated, padded", 7);
}

TEST(CudaAttentionCores, DilatedGatheredPathMatchesCpu) {
  LN_REQUIRE_GPU();
  // N a multiple of every segment: the GPU gathers each branch into dense segments (with the loss
  // through out alone its backward is gathered too). Rates that do not divide the segment (64 / 3)
  // pad the heads with fewer rows when causal, and fall back to strided views when not. f32 takes
  // the gathered path too (its branch calls run on materialised scores).
  for (const auto& [lengths, rates] : std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>{
           {{32, 64, 128}, {1, 2, 4}}, {{64, 128, 256}, {1, 3, 6}}}) {
    for (int64_t d : {64, 32}) {
      for (bool causal : {false, true}) {
        for (bool through_lse : {false, true}) {
          for (DType dt : {DType::BF16, DType::F32}) {
            expect_parity(maker("dilated", dilated_config(lengths, rates)), {256, 256, d, causal, 0, through_lse},
                          "dilated, gathered", 1, dt);
          }
        }
      }
    }
  }
}

TEST(CudaAttentionCores, BlockSparseMatchesCpu) {
  LN_REQUIRE_GPU();
  for (const char* kind : {"local", "dilated", "global_local", "random", "hierarchical"}) {
    for (int64_t block : {16, 32, 64}) {
      // Six and a half blocks: a short last block.
      expect_parity_all(maker("block_sparse", block_config(pattern(kind), block)), 6 * block + block / 2,
                        6 * block + block / 2, std::string("block_sparse ") + kind + " block " + std::to_string(block));
    }
  }
}

TEST(CudaAttentionCores, AdaptiveMatchesCpu) {
  LN_REQUIRE_GPU();
  for (int64_t n : {256, 200}) {  // 200: a short last block in the pooled scorer inputs
    for (int64_t d : {64, 32}) {
      for (bool causal : {false, true}) {
        const Case c{n, n, d, causal, 0};
        const CorePair p = expect_parity(maker("adaptive", adaptive_config(d)), c, "adaptive");
        SCOPED_TRACE("adaptive, " + describe(c));
        // Same scorer weights and the same routing on both devices.
        const std::vector<Tensor> wc = p.cpu->parameters(), wg = p.gpu->parameters();
        ASSERT_EQ(wc.size(), 2u);
        for (size_t i = 0; i < wc.size(); ++i) {
          EXPECT_TRUE(wg[i].device().is_cuda());
          EXPECT_EQ(max_abs_diff(wg[i], wc[i]), 0.0);
          EXPECT_TRUE(wg[i].grad().defined() && wg[i].grad().device().is_cuda());
        }
        const auto& lc = *static_cast<const AdaptiveAttention&>(*p.cpu).last_layout();
        const auto& lg = *static_cast<const AdaptiveAttention&>(*p.gpu).last_layout();
        EXPECT_EQ(lg.row_offsets, lc.row_offsets);
        EXPECT_EQ(lg.key_block_ids, lc.key_block_ids);
        // The regulariser is computed in f32 from the same values on both devices.
        ASSERT_TRUE(p.got.aux_loss.defined() && p.ref.aux_loss.defined());
        EXPECT_LE(rel_error(p.got.aux_loss, p.ref.aux_loss), 1e-4);
      }
    }
  }
}

TEST(CudaAttentionCores, AdaptiveRejectsInputsOnAnotherDevice) {
  LN_REQUIRE_GPU();
  const auto core = make_attention_core("adaptive", adaptive_config(64));  // scorer on the CPU
  const Tensor q = zeros({1, 64, 2, 64}, DType::BF16, Device::cuda(0));
  try {
    core->forward(q, q, q, {});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("[adaptive]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cuda:0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(1, 64, 2, 64)"), std::string::npos) << msg;
  }
}

// Causal cores on the GPU: changing the queries, keys and values at positions >= t leaves out and
// lse of the rows before t bit for bit as they were (kT falls inside an adaptive block, so a scorer
// pooling later queries of that block could route it differently), and changes the rows after.
TEST(CudaAttentionCores, CausalOnGpu) {
  LN_REQUIRE_GPU();
  constexpr int64_t kN = 192, kT = 101;
  std::vector<std::pair<std::string, CoreMaker>> cores{
      {"dense", maker("dense", {})}, {"dilated", maker("dilated", dilated_config({32, 64, 128}, {1, 2, 4}))}};
  for (const char* kind : {"local", "dilated", "global_local", "random", "hierarchical"}) {
    cores.emplace_back(std::string("block_sparse ") + kind, maker("block_sparse", block_config(pattern(kind), 16)));
  }
  cores.emplace_back("adaptive", maker("adaptive", adaptive_config(64)));
  const Device gpu = Device::cuda(0);
  const std::vector<Tensor> host = bf16_inputs({kN, kN, 64, true, 0}, 11);
  std::vector<Tensor> qkv, changed;
  for (const Tensor& t : host) qkv.push_back(t.to(gpu));
  Generator g(12);
  for (size_t i = 0; i < 3; ++i) {
    const Tensor noise = randn({2, kN - kT, 4, 64}, DType::F32, Device::cpu(), &g);
    changed.push_back(cat({qkv[i].narrow(1, 0, kT), cast(noise, DType::BF16).to(gpu)}, 1));
  }
  AttentionOptions options;
  options.causal = true;
  for (const auto& [name, make] : cores) {
    SCOPED_TRACE(name);
    std::unique_ptr<AttentionCore> core;
    {
      DefaultDeviceGuard guard(gpu);
      core = make();
    }
    NoGradGuard no_grad;
    const AttentionResult a = core->forward(qkv[0], qkv[1], qkv[2], options);
    const AttentionResult b = core->forward(changed[0], changed[1], changed[2], options);
    EXPECT_EQ(max_abs_diff(a.out.narrow(1, 0, kT), b.out.narrow(1, 0, kT)), 0.0);
    EXPECT_EQ(max_abs_diff(a.lse.narrow(2, 0, kT), b.lse.narrow(2, 0, kT)), 0.0);
    EXPECT_GT(max_abs_diff(a.out.narrow(1, kT, kN - kT), b.out.narrow(1, kT, kN - kT)), 0.0);
  }
}

}  // namespace
}  // namespace longnet
