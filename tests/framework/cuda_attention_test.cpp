// CUDA flash attention and LSE merge against the CPU op on the same 16-bit inputs: out, lse and
// the gradients of q, k, v (through out alone, and through out and lse), for masks, ragged tiles,
// layouts, strided views and accumulating backward calls; with our kernel forced, with the
// automatic choice (cuDNN where it applies), and with cuDNN forced where it must apply.
#include <cmath>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "framework/ops/attention.h"
#include "framework/ops/ops.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace longnet {
namespace {

// Values of `t` (any device, any float dtype) as f64.
std::vector<double> values(const Tensor& t) {
  NoGradGuard ng;
  return t.to(Device::cpu()).to(DType::F64).contiguous().to_vector<double>();
}

// ||got - want|| / ||want|| over the entries where want is finite; -inf entries (empty rows'
// lse) must be -inf in both, and nothing may be NaN.
::testing::AssertionResult close_rel(const char* what, const Tensor& got, const Tensor& want, double tol) {
  if (!got.defined() || !want.defined()) {
    return ::testing::AssertionFailure() << what << ": defined on one side only";
  }
  if (got.shape() != want.shape()) return ::testing::AssertionFailure() << what << ": shapes differ";
  const std::vector<double> a = values(got), b = values(want);
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return ::testing::AssertionFailure() << what << ": NaN at " << i;
    if (std::isinf(b[i]) || std::isinf(a[i])) {
      if (a[i] != b[i]) return ::testing::AssertionFailure() << what << ": " << a[i] << " vs " << b[i] << " at " << i;
      continue;
    }
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  if (rel > tol) return ::testing::AssertionFailure() << what << ": relative error " << rel << " > " << tol;
  return ::testing::AssertionSuccess();
}

double tolerance(DType dt) {
  switch (dt) {
    case DType::F16: return 1e-2;
    case DType::F32: return 1e-4;
    case DType::F64: return 1e-9;
    default: return 2e-2;
  }
}

// A (B, Nk) bool mask padding the last pad[b] keys of batch element b.
Tensor padding_mask(int64_t nk, const std::vector<int64_t>& pad) {
  std::vector<uint8_t> m;
  for (int64_t p : pad) {
    for (int64_t j = 0; j < nk; ++j) m.push_back(j >= nk - p ? 1 : 0);
  }
  return cast(from_vector(m, {static_cast<int64_t>(pad.size()), nk}), DType::Bool);
}

AttentionParams on_device(AttentionParams p, Device d) {
  if (p.key_padding_mask.defined()) p.key_padding_mask = p.key_padding_mask.to(d);
  return p;
}

// The op's results on one device: out, lse, dq, dk, dv.
struct Results {
  std::vector<Tensor> t;
};

// Leaves (stored as `base` shapes, viewed through `view`) on `device` in `dt`, attention, then the
// backward of sum(out * wo) + sum(lse * wl).
using ViewFn = std::function<Tensor(const Tensor&)>;

Results run(const std::vector<Tensor>& base, const ViewFn& view, const AttentionParams& p, DType dt, Device device,
            const Tensor& wo, const Tensor& wl) {
  std::vector<Tensor> leaves;
  for (const Tensor& b : base) {
    Tensor l = b.to(dt).to(device).clone();
    l.requires_grad_(true);
    leaves.push_back(l);
  }
  const AttentionOutput r = attention(view(leaves[0]), view(leaves[1]), view(leaves[2]), on_device(p, device));
  const Tensor through_out = sum(mul(r.out, wo.to(dt).to(device))).to(DType::F32);
  // Without lse weights the lse receives no gradient (the case the fused backward serves).
  (wl.defined() ? add(through_out, sum(mul(r.lse, wl.to(r.lse.dtype()).to(device))).to(DType::F32)) : through_out)
      .backward();
  return {{r.out, r.lse, leaves[0].grad(), leaves[1].grad(), leaves[2].grad()}};
}

struct Case {
  int64_t B, N, Nk, H, D;
  bool causal;
  std::vector<int64_t> pad;  // padded keys per batch element (empty: none)
  int64_t block = 0;         // layout block (0: dense)
};

std::string label(const Case& c, DType dt) {
  std::ostringstream os;
  os << "B" << c.B << " N" << c.N << " Nk" << c.Nk << " H" << c.H << " D" << c.D << (c.causal ? " causal" : "")
     << (c.pad.empty() ? "" : " padded");
  if (c.block) os << " block " << c.block;
  os << " " << dtype_name(dt);
  return os.str();
}

// A layout with per-head rows: the diagonal block, block 0 and one more that depends on the head.
std::shared_ptr<const AttentionLayout> test_layout(const Case& c) {
  const int64_t qb = (c.N + c.block - 1) / c.block, kb = (c.Nk + c.block - 1) / c.block;
  std::vector<std::vector<int64_t>> rows;
  for (int64_t h = 0; h < c.H; ++h) {
    for (int64_t i = 0; i < qb; ++i) rows.push_back({std::min(i, kb - 1), 0, (i + h + 2) % kb});
  }
  return std::make_shared<const AttentionLayout>(AttentionLayout::from_rows(c.block, 1, c.H, qb, kb, rows));
}

AttentionParams params_of(const Case& c) {
  AttentionParams p;
  p.causal = c.causal;
  p.causal_offset = c.Nk - c.N;
  if (!c.pad.empty()) p.key_padding_mask = padding_mask(c.Nk, c.pad);
  if (c.block) p.layout = test_layout(c);
  return p;
}

const char* kernel_name(AttentionKernel k) {
  return k == AttentionKernel::Own ? "own kernel" : k == AttentionKernel::Cudnn ? "cuDNN" : "auto";
}

// CPU and GPU on the same rounded inputs; the stored leaves go through `view` (identity by
// default). The GPU runs under each of `kernels`, with the loss through out and lse and through
// out alone.
void expect_parity(const Case& c, DType dt, const std::vector<Shape>& stored, const ViewFn& view,
                   std::initializer_list<AttentionKernel> kernels = {AttentionKernel::Own, AttentionKernel::Auto}) {
  Generator g(42);
  std::vector<Tensor> base;
  for (const Shape& s : stored) base.push_back(randn(s, DType::F32, Device::cpu(), &g));
  const Tensor wo = randn({c.B, c.N, c.H, c.D}, DType::F32, Device::cpu(), &g);
  const Tensor wl = randn({c.B, c.H, c.N}, DType::F32, Device::cpu(), &g);
  const AttentionParams p = params_of(c);
  for (const Tensor& lse_weights : {wl, Tensor()}) {
    const Results cpu = run(base, view, p, dt, Device::cpu(), wo, lse_weights);
    for (AttentionKernel k : kernels) {
      // cuDNN takes no lse gradient: forced, it only runs the loss through out.
      if (k == AttentionKernel::Cudnn && lse_weights.defined()) continue;
      AttentionKernelScope choice(k);
      const Results gpu = run(base, view, p, dt, Device::cuda(0), wo, lse_weights);
      const char* names[] = {"out", "lse", "dq", "dk", "dv"};
      for (size_t i = 0; i < 5; ++i) {
        EXPECT_TRUE(close_rel(names[i], gpu.t[i], cpu.t[i], tolerance(dt)))
            << label(c, dt) << ", " << kernel_name(k) << (lse_weights.defined() ? ", loss through lse" : "");
      }
    }
  }
}

void expect_parity(const Case& c, DType dt,
                   std::initializer_list<AttentionKernel> kernels = {AttentionKernel::Own, AttentionKernel::Auto}) {
  expect_parity(c, dt, {{c.B, c.N, c.H, c.D}, {c.B, c.Nk, c.H, c.D}, {c.B, c.Nk, c.H, c.D}},
                [](const Tensor& t) { return t; }, kernels);
}

TEST(CudaAttention, DenseMatchesCpu) {
  LN_REQUIRE_GPU();
  for (const Case& c : {Case{2, 200, 200, 3, 64, false, {}}, Case{2, 200, 200, 3, 64, true, {}},
                        Case{2, 333, 333, 3, 32, true, {}}, Case{1, 333, 333, 2, 128, false, {}},
                        Case{2, 200, 200, 3, 128, true, {}}, Case{1, 64, 64, 1, 32, false, {}}}) {
    for (DType dt : {DType::BF16, DType::F16}) expect_parity(c, dt);
  }
}

TEST(CudaAttention, KeyLengthsOffsetsAndPadding) {
  LN_REQUIRE_GPU();
  // Nk > N with the causal offset aligning the last rows; Nk < N (a negative offset hides the
  // first rows' keys entirely: lse -inf, out 0); padding, with and without causal.
  for (const Case& c : {Case{2, 150, 333, 3, 64, true, {}}, Case{2, 200, 130, 3, 64, false, {}},
                        Case{2, 200, 130, 2, 32, true, {}}, Case{2, 200, 200, 3, 64, false, {7, 150}},
                        Case{2, 333, 340, 3, 32, true, {5, 40}}, Case{2, 7, 300, 2, 128, true, {0, 100}}}) {
    for (DType dt : {DType::BF16, DType::F16}) expect_parity(c, dt);
  }
}

TEST(CudaAttention, BlockSparseLayoutsMatchCpu) {
  LN_REQUIRE_GPU();
  // Blocks of 64 (one tile), 128 (two tiles per block), 32 and 48 (smaller tiles), 16.
  for (const Case& c : {Case{2, 200, 200, 3, 64, false, {}, 64}, Case{2, 333, 333, 3, 32, true, {}, 64},
                        Case{1, 300, 300, 2, 64, true, {}, 128}, Case{2, 200, 200, 3, 128, false, {3, 9}, 32},
                        Case{1, 200, 250, 3, 32, true, {}, 48}, Case{2, 100, 100, 2, 64, true, {}, 16}}) {
    for (DType dt : {DType::BF16, DType::F16}) expect_parity(c, dt);
  }
}

TEST(CudaAttention, StridedViewsMatchCpu) {
  LN_REQUIRE_GPU();
  const Case c{2, 200, 200, 3, 64, true, {}};
  // (B, H, N, D) storage seen as (B, N, H, D): 16-byte aligned rows, head-major.
  expect_parity(c, DType::BF16, {{2, 3, 200, 64}, {2, 3, 200, 64}, {2, 3, 200, 64}},
                [](const Tensor& t) { return transpose(t, 1, 2); });
  // Rows of 65 elements narrowed to 64: rows not 16-byte aligned (element-wise loads).
  expect_parity(c, DType::BF16, {{2, 200, 3, 65}, {2, 200, 3, 65}, {2, 200, 3, 65}},
                [](const Tensor& t) { return t.narrow(3, 0, 64); });
}

// attention_backward_into adding to existing gradients (as composite cores call it), on the GPU
// under `kernel` against the CPU: four bf16-rounded operands (q, k, v, dout) stored as `stored`
// and seen through `view`.
void expect_accumulating_backward(const Shape& stored, const ViewFn& view, AttentionKernel kernel, uint64_t seed) {
  Generator g(seed);
  std::vector<Tensor> cpu_in, gpu_in;
  for (int i = 0; i < 4; ++i) {
    const Tensor t = randn(stored, DType::F32, Device::cpu(), &g).to(DType::BF16);
    cpu_in.push_back(view(t.to(DType::F32)));
    gpu_in.push_back(view(t.to(Device::cuda(0))));
  }
  AttentionParams p;
  p.causal = true;
  AttentionGrads want, got;
  for (bool gpu : {false, true}) {
    AttentionKernelScope choice(gpu ? kernel : AttentionKernel::Auto);
    const std::vector<Tensor>& x = gpu ? gpu_in : cpu_in;
    const Device d = gpu ? Device::cuda(0) : Device::cpu();
    const DType dt = gpu ? DType::BF16 : DType::F32;
    const AttentionOutput r = attention_forward(x[0], x[1], x[2], p);
    const Shape s = x[0].shape();
    AttentionGrads into{full(s, 0.5, dt, d), full(s, -1.0, dt, d), full(s, 2.0, dt, d), Tensor()};
    attention_backward_into(x[0], x[1], x[2], r.out.to(dt), r.lse, x[3], Tensor(), p, into, true);
    (gpu ? got : want) = into;
  }
  EXPECT_TRUE(close_rel("dq", got.dq, want.dq, 2e-2)) << kernel_name(kernel);
  EXPECT_TRUE(close_rel("dk", got.dk, want.dk, 2e-2)) << kernel_name(kernel);
  EXPECT_TRUE(close_rel("dv", got.dv, want.dv, 2e-2)) << kernel_name(kernel);
}

TEST(CudaAttention, AccumulatingBackwardAddsToGradients) {
  LN_REQUIRE_GPU();
  expect_accumulating_backward({2, 130, 3, 64}, [](const Tensor& t) { return t; }, AttentionKernel::Own, 5);
}

TEST(CudaAttention, MergeMatchesCpu) {
  LN_REQUIRE_GPU();
  // Two causal parts over the two halves of the keys (early rows see nothing of the second half:
  // lse -inf there), merged; gradients reach q, k, v through both parts and the weights.
  Generator g(9);
  const Shape s{2, 150, 3, 64};
  std::vector<Tensor> base;
  for (int i = 0; i < 3; ++i) base.push_back(randn(s, DType::F32, Device::cpu(), &g));
  const Tensor wo = randn(s, DType::F32, Device::cpu(), &g), wl = randn({2, 3, 150}, DType::F32, Device::cpu(), &g);
  for (DType dt : {DType::BF16, DType::F16}) {
    std::vector<Results> res;
    for (Device d : {Device::cpu(), Device::cuda(0)}) {
      std::vector<Tensor> x;
      for (const Tensor& b : base) {
        Tensor l = b.to(dt).to(d).clone();
        l.requires_grad_(true);
        x.push_back(l);
      }
      AttentionParams first, second;
      first.causal = second.causal = true;
      second.causal_offset = -75;
      const AttentionOutput m = merge_attention(
          {attention(x[0], x[1].narrow(1, 0, 75), x[2].narrow(1, 0, 75), first),
           attention(x[0], x[1].narrow(1, 75, 75), x[2].narrow(1, 75, 75), second)});
      add(sum(mul(m.out, wo.to(dt).to(d))).to(DType::F32), sum(mul(m.lse, wl.to(d)))).backward();
      res.push_back({{m.out, m.lse, x[0].grad(), x[1].grad(), x[2].grad()}});
    }
    const char* names[] = {"out", "lse", "dq", "dk", "dv"};
    for (size_t i = 0; i < 5; ++i) EXPECT_TRUE(close_rel(names[i], res[1].t[i], res[0].t[i], tolerance(dt))) << dtype_name(dt);
  }
}

TEST(CudaAttention, MergeOfF32PartsMatchesCpu) {
  LN_REQUIRE_GPU();
  Generator g(11);
  const Shape s{2, 40, 3, 16}, ls{2, 3, 40};
  std::vector<Tensor> base;
  for (int i = 0; i < 3; ++i) {
    base.push_back(randn(s, DType::F32, Device::cpu(), &g));
    base.push_back(randn(ls, DType::F32, Device::cpu(), &g));
  }
  EXPECT_TRUE(testing::cpu_cuda_parity(
      [](const std::vector<Tensor>& x) {
        const AttentionOutput m = merge_attention({{x[0], x[1]}, {x[2], x[3]}, {x[4], x[5]}});
        return cat({flatten(m.out), flatten(m.lse)});
      },
      base, DType::F32));
}

TEST(CudaAttention, BlockBiasAndItsGradientMatchCpu) {
  LN_REQUIRE_GPU();
  const int64_t B = 2, N = 200, H = 3, D = 64;
  for (int64_t block : {int64_t{64}, int64_t{128}, int64_t{32}}) {
    const int64_t nb = (N + block - 1) / block;
    std::vector<std::vector<int64_t>> rows;
    for (int64_t r = 0; r < B * H * nb; ++r) rows.push_back({0, r % nb, (r * 7 + 1) % nb});
    AttentionParams p;
    p.causal = true;
    p.layout = std::make_shared<const AttentionLayout>(AttentionLayout::from_rows(block, B, H, nb, nb, rows));
    Generator g(13);
    std::vector<Tensor> base;
    for (int i = 0; i < 3; ++i) base.push_back(randn({B, N, H, D}, DType::F32, Device::cpu(), &g));
    base.push_back(mul(randn({p.layout->entries()}, DType::F32, Device::cpu(), &g), 0.5));
    const Tensor wo = randn({B, N, H, D}, DType::F32, Device::cpu(), &g), wl = randn({B, H, N}, DType::F32, Device::cpu(), &g);
    std::vector<std::vector<Tensor>> res;
    for (Device d : {Device::cpu(), Device::cuda(0)}) {
      std::vector<Tensor> x;
      for (const Tensor& b : base) {
        Tensor l = b.to(DType::BF16).to(d).clone();
        l.requires_grad_(true);
        x.push_back(l);
      }
      AttentionParams pd = p;
      pd.block_bias = x[3];
      const AttentionOutput r = attention(x[0], x[1], x[2], pd);
      add(sum(mul(r.out, wo.to(DType::BF16).to(d))).to(DType::F32), sum(mul(r.lse, wl.to(d)))).backward();
      res.push_back({r.out, r.lse, x[0].grad(), x[1].grad(), x[2].grad(), x[3].grad()});
    }
    const char* names[] = {"out", "lse", "dq", "dk", "dv", "dblock_bias"};
    for (size_t i = 0; i < 6; ++i) EXPECT_TRUE(close_rel(names[i], res[1][i], res[0][i], 2e-2)) << "block " << block;
  }
}

TEST(CudaAttention, F32AndF64MatchCpu) {
  LN_REQUIRE_GPU();
  // Materialised scores on the GPU: every mask, as for the 16-bit kernels.
  for (const Case& c : {Case{2, 200, 200, 3, 64, true, {}}, Case{2, 150, 333, 3, 48, true, {}},
                        Case{2, 200, 200, 3, 64, false, {7, 150}}, Case{2, 200, 200, 3, 32, true, {}, 32}}) {
    for (DType dt : {DType::F32, DType::F64}) expect_parity(c, dt, {AttentionKernel::Auto});
  }
}

TEST(CudaAttention, CudnnMatchesCpu) {
  LN_REQUIRE_GPU();
  // Everything cuDNN must take: plain and causal, ragged lengths, cross attention (Nk != N,
  // not causal), every head dim.
  for (const Case& c : {Case{2, 200, 200, 3, 64, false, {}}, Case{2, 200, 200, 3, 64, true, {}},
                        Case{2, 333, 333, 3, 32, true, {}}, Case{1, 333, 333, 2, 128, false, {}},
                        Case{2, 200, 200, 3, 128, true, {}}, Case{2, 150, 333, 3, 64, false, {}},
                        Case{2, 1, 77, 2, 64, false, {}}}) {
    for (DType dt : {DType::BF16, DType::F16}) expect_parity(c, dt, {AttentionKernel::Cudnn});
  }
}

TEST(CudaAttention, CudnnTakesStridedAndUnfoldableBatchViews) {
  LN_REQUIRE_GPU();
  const Case c{2, 96, 96, 3, 64, true, {}};
  const std::initializer_list<AttentionKernel> cudnn{AttentionKernel::Cudnn};
  // Head-major storage seen as (B, N, H, D).
  expect_parity(c, DType::BF16, {{2, 3, 96, 64}, {2, 3, 96, 64}, {2, 3, 96, 64}},
                [](const Tensor& t) { return transpose(t, 1, 2); }, cudnn);
  // Every other batch element, row and head of a larger tensor (a dilated segment's view).
  expect_parity(c, DType::BF16, {{3, 192, 6, 64}, {3, 192, 6, 64}, {3, 192, 6, 64}},
                [](const Tensor& t) { return t.slice(0, 0, 3, 2).slice(1, 0, 192, 2).slice(2, 1, 6, 2); }, cudnn);
}

TEST(CudaAttention, CudnnAccumulatingBackwardAddsToGradients) {
  LN_REQUIRE_GPU();
  // Two batch dims (B, segments) over every other row, as the dilated core calls it; taking
  // every other segment keeps the two batch dims from folding into one (a call per element of B).
  expect_accumulating_backward({2, 3, 128, 4, 64},
                               [](const Tensor& t) { return t.slice(1, 0, 3, 2).slice(2, 1, 128, 2); },
                               AttentionKernel::Cudnn, 6);
}

TEST(CudaAttention, ForcedCudnnSaysWhatItCannotTake) {
  LN_REQUIRE_GPU();
  AttentionKernelScope choice(AttentionKernel::Cudnn);
  const Tensor q = randn({1, 64, 2, 64}, DType::F32, Device::cpu()).to(DType::BF16).to(Device::cuda(0));
  AttentionParams p;
  p.key_padding_mask = padding_mask(64, {3}).to(Device::cuda(0));
  const std::string msg = testing::error_message([&] { attention(q, q, q, p); });
  EXPECT_NE(msg.find("cuDNN kernel was required"), std::string::npos) << msg;
  EXPECT_NE(msg.find("key padding"), std::string::npos) << msg;
}

TEST(CudaAttention, UnsupportedHeadDimSaysWhy) {
  LN_REQUIRE_GPU();
  const Tensor q = randn({1, 64, 1, 48}, DType::F32, Device::cpu()).to(DType::BF16).to(Device::cuda(0));
  const std::string msg = testing::error_message([&] { attention(q, q, q); });
  EXPECT_NE(msg.find("[attention]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("head dims 32, 64 or 128"), std::string::npos) << msg;
}

}  // namespace
}  // namespace longnet
