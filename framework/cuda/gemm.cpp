// Row-major GEMM on cuBLASLt, which is column-major. A row-major (R, C) matrix with row stride ld
// is, read column-major with the same ld, the (C, R) matrix: its transpose. So row-major
// C = op(A) @ op(B) is computed as the column-major C^T = op(B)^T @ op(A)^T: our B is cuBLASLt's
// A, our A its B, M and N swap, and no data moves. For the same reason cuBLASLt's "rows of D" are
// our columns (bias over N) and its BGRADB reduces our A.
#include "framework/cuda/gemm.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "framework/core/shape.h"
#include "framework/cuda/check.h"
#include "framework/cuda/context.h"
#include "framework/cuda/gemm_epilogue.h"

namespace longnet::cuda {
namespace {

constexpr int kMaxAlgorithms = 16;
// Tuning a plan times each proposal in kTuneRounds turns of kTuneRuns runs (after one warm-up
// run); the median of those counts.
constexpr int kTuneRounds = 3;
constexpr int kTuneRuns = 5;
// A proposal displaces the heuristic's first choice only when at least this much faster: products
// so small that launch cost dominates time alike under every algorithm, and noise would pick one.
constexpr double kTuneMargin = 0.98;

const char* epilogue_name(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::None: return "none";
    case GemmEpilogue::Bias: return "bias";
    case GemmEpilogue::BiasGelu: return "bias+gelu";
    case GemmEpilogue::DGeluBGrad: return "dgelu+bgrad";
    case GemmEpilogue::BGradA: return "bgrad(A)";
  }
  return "?";
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    case DType::F32: return CUDA_R_32F;
    case DType::F64: return CUDA_R_64F;
    default: LN_FAIL("[gemm] unsupported dtype ", dtype_name(t));
  }
}

void validate(const GemmParams& p) {
  LN_CHECK(is_floating(p.dtype), "[gemm] unsupported dtype (bf16, f16, f32 or f64 only): ", gemm_str(p));
  LN_CHECK(p.m >= 0 && p.n >= 0 && p.k >= 0 && p.batch >= 1 &&
               p.batch <= std::numeric_limits<int32_t>::max(),
           "[gemm] invalid sizes: ", gemm_str(p));
  LN_CHECK(!p.tf32 || p.dtype == DType::F32, "[gemm] tf32 applies to f32 only: ", gemm_str(p));
  LN_CHECK(gemm_c_dtype(p) == p.dtype ||
               (gemm_c_dtype(p) == DType::F32 && is_reduced_float(p.dtype) && p.epilogue == GemmEpilogue::None),
           "[gemm] a C dtype other than the operands' is only f32 for bf16/f16 operands, without an epilogue: ",
           gemm_str(p));
  const int64_t a_cols = p.trans_a ? p.m : p.k, b_cols = p.trans_b ? p.k : p.n;
  LN_CHECK(p.lda >= std::max<int64_t>(1, a_cols) && p.ldb >= std::max<int64_t>(1, b_cols) &&
               p.ldc >= std::max<int64_t>(1, p.n),
           "[gemm] a leading dim is smaller than the row it steps over: ", gemm_str(p));
  LN_CHECK(p.batch == 1 || p.stride_c != 0, "[gemm] C cannot be shared across the batch (stride_c 0): ",
           gemm_str(p));
  LN_CHECK((p.m * p.k == 0 || p.a) && (p.k * p.n == 0 || p.b) && (p.m * p.n == 0 || p.c),
           "[gemm] null operand: ", gemm_str(p));
  LN_CHECK(!p.c_in || (p.k > 0 && p.c_in != p.c), "[gemm] a separate C input needs K > 0 and memory of its own: ",
           gemm_str(p));
  if (p.epilogue == GemmEpilogue::None) return;
  LN_CHECK(p.batch == 1, "[gemm] epilogues need batch 1: ", gemm_str(p));
  const bool aux_ok = p.ld_aux >= std::max<int64_t>(1, p.n);
  switch (p.epilogue) {
    case GemmEpilogue::None:
      break;
    case GemmEpilogue::Bias:
      LN_CHECK(p.bias, "[gemm] the bias epilogue needs a bias (N): ", gemm_str(p));
      break;
    case GemmEpilogue::BiasGelu:
      LN_CHECK(p.bias, "[gemm] the bias+gelu epilogue needs a bias (N): ", gemm_str(p));
      LN_CHECK(!p.aux || aux_ok, "[gemm] aux row stride ", p.ld_aux, " < N: ", gemm_str(p));
      break;
    case GemmEpilogue::DGeluBGrad:
      LN_CHECK(p.aux && aux_ok, "[gemm] dgelu needs the pre-activation aux (M, N) with row stride >= N, got ",
               p.ld_aux, ": ", gemm_str(p));
      break;
    case GemmEpilogue::BGradA:
      LN_CHECK(p.bias_grad, "[gemm] the bgrad(A) epilogue needs a bias_grad (M): ", gemm_str(p));
      LN_CHECK(p.alpha == 1.0, "[gemm] the bgrad(A) epilogue needs alpha 1, got ", p.alpha, ": ", gemm_str(p));
      break;
  }
}

cublasLtEpilogue_t lt_epilogue(const GemmParams& p, GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::None: return CUBLASLT_EPILOGUE_DEFAULT;
    case GemmEpilogue::Bias: return CUBLASLT_EPILOGUE_BIAS;
    case GemmEpilogue::BiasGelu: return p.aux ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS;
    case GemmEpilogue::DGeluBGrad: return p.bias_grad ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU;
    case GemmEpilogue::BGradA: return CUBLASLT_EPILOGUE_BGRADB;  // our A is cuBLASLt's B
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

bool uses_aux(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DGELU || e == CUBLASLT_EPILOGUE_DGELU_BGRAD;
}

// The vector behind cuBLASLt's bias pointer: the bias, or the bias gradient it writes.
const void* lt_bias(const GemmParams& p, cublasLtEpilogue_t e) {
  switch (e) {
    case CUBLASLT_EPILOGUE_BIAS:
    case CUBLASLT_EPILOGUE_GELU_BIAS:
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: return p.bias;
    case CUBLASLT_EPILOGUE_DGELU_BGRAD:
    case CUBLASLT_EPILOGUE_BGRADB: return p.bias_grad;
    default: return nullptr;
  }
}

// Whether to ask cuBLASLt to fuse e at all. GELU only for the 16-bit types: cuBLASLt does not
// document the accuracy of its GELU, and f32/f64 products serve as references. The aux leading
// dim must be a multiple of 8 (cuBLASLt's rule).
bool may_fuse(const GemmParams& p, cublasLtEpilogue_t e) {
  if (e == CUBLASLT_EPILOGUE_DEFAULT || e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_BGRADB) return true;
  return is_reduced_float(p.dtype) && (!uses_aux(e) || p.ld_aux % 8 == 0);
}

// The largest power of two, up to 256, dividing the address of every batch's matrix: cuBLASLt
// picks kernels by the alignment they may assume.
int64_t alignment(const void* ptr, int64_t batch_stride, int64_t batch, DType t) {
  uint64_t bits = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ptr)) | 256u;
  if (batch > 1) bits |= static_cast<uint64_t>(batch_stride) * dtype_size(t);
  return static_cast<int64_t>(bits & (~bits + 1));
}

// Everything the heuristic's answer depends on.
using PlanKey = std::array<int64_t, 23>;

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = 0;
    for (int64_t v : k) h ^= std::hash<int64_t>{}(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
  }
};

PlanKey make_key(const GemmParams& p, cublasLtEpilogue_t e) {
  const bool batched = p.batch > 1, aux = uses_aux(e);
  const DType c_type = gemm_c_dtype(p);
  return {p.device, static_cast<int64_t>(p.dtype), static_cast<int64_t>(c_type), p.m, p.n, p.k, p.batch,
          p.lda, p.ldb, p.ldc, batched ? p.stride_a : 0, batched ? p.stride_b : 0, batched ? p.stride_c : 0,
          p.trans_a, p.trans_b, p.tf32, static_cast<int64_t>(e),
          alignment(p.a, p.stride_a, p.batch, p.dtype), alignment(p.b, p.stride_b, p.batch, p.dtype),
          std::min(alignment(p.c, p.stride_c, p.batch, c_type), alignment(p.c_in ? p.c_in : p.c, p.stride_c, p.batch, c_type)),
          alignment(lt_bias(p, e), 0, 1, p.dtype),
          aux ? alignment(p.aux, 0, 1, p.dtype) : 0, aux ? p.ld_aux : 0};
}

// Descriptors and the heuristic's proposals for one key. In cuBLASLt's terms: layout_a is our B,
// layout_b our A, layout_c both C and D.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr, layout_c = nullptr;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  std::vector<cublasLtMatmulAlgo_t> algos;  // best first; empty when cuBLASLt has none
  size_t chosen = 0;   // the proposal gemm() runs: the heuristic's first until tuned
  bool tuned = false;  // chosen is the measured fastest
  std::mutex mu;       // the descriptor's epilogue pointers are set for each call; guards chosen, tuned

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    for (cublasLtMatrixLayout_t l : {layout_a, layout_b, layout_c}) {
      if (l) cublasLtMatrixLayoutDestroy(l);
    }
  }
};

template <class V>
void set_desc(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const V& v) {
  LN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(v)));
}

void set_pointers(cublasLtMatmulDesc_t d, const GemmParams& p, cublasLtEpilogue_t e) {
  if (const void* bias = lt_bias(p, e)) set_desc(d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  if (uses_aux(e)) set_desc(d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, p.aux);
}

// Column-major (rows, cols) with leading dim ld, batched when batch > 1.
cublasLtMatrixLayout_t make_layout(DType t, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                                   int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  LN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, cuda_type(t), static_cast<uint64_t>(rows),
                                             static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const auto count = static_cast<int32_t>(batch);
    const cublasStatus_t s1 =
        cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count));
    const cublasStatus_t s2 =
        cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride));
    if (s1 != CUBLAS_STATUS_SUCCESS || s2 != CUBLAS_STATUS_SUCCESS) {
      cublasLtMatrixLayoutDestroy(l);
      LN_CUBLAS_CHECK(s1 != CUBLAS_STATUS_SUCCESS ? s1 : s2);
    }
  }
  return l;
}

void find_algorithms(Plan& plan, const GemmParams& p) {
  cublasLtMatmulPreference_t pref = nullptr;
  LN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  std::unique_ptr<void, void (*)(void*)> pref_guard(
      pref, [](void* q) { cublasLtMatmulPreferenceDestroy(static_cast<cublasLtMatmulPreference_t>(q)); });
  size_t ws_bytes = 0;
  cublaslt_workspace(p.device, &ws_bytes);
  const uint64_t max_ws = ws_bytes;
  LN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws,
                                                       sizeof(max_ws)));
  const std::array<std::pair<cublasLtMatmulPreferenceAttributes_t, int64_t>, 4> aligns = {{
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment(p.b, p.stride_b, p.batch, p.dtype)},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment(p.a, p.stride_a, p.batch, p.dtype)},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment(p.c, p.stride_c, p.batch, gemm_c_dtype(p))},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment(p.c, p.stride_c, p.batch, gemm_c_dtype(p))},
  }};
  for (const auto& [attr, bytes] : aligns) {
    const auto v = static_cast<uint32_t>(bytes);
    LN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v)));
  }
  std::array<cublasLtMatmulHeuristicResult_t, kMaxAlgorithms> results{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(cublaslt(p.device), plan.desc, plan.layout_a, plan.layout_b, plan.layout_c,
                                     plan.layout_c, pref, kMaxAlgorithms, results.data(), &found);
  if (st != CUBLAS_STATUS_SUCCESS) {
    // No algorithm: an epilogue then runs unfused, whatever cuBLASLt objected to; a plain
    // product reports NOT_SUPPORTED through gemm() and anything else here.
    if (st == CUBLAS_STATUS_NOT_SUPPORTED || plan.epilogue != CUBLASLT_EPILOGUE_DEFAULT) return;
    LN_CUBLAS_CHECK(st);
  }
  for (int i = 0; i < found; ++i) {
    const cublasLtMatmulHeuristicResult_t& r = results[static_cast<size_t>(i)];
    if (r.state == CUBLAS_STATUS_SUCCESS) plan.algos.push_back(r.algo);
  }
}

std::unique_ptr<Plan> make_plan(const GemmParams& p, cublasLtEpilogue_t e) {
  auto plan = std::make_unique<Plan>();
  plan->epilogue = e;
  if (!may_fuse(p, e)) return plan;
  const bool f64 = p.dtype == DType::F64;
  const cublasComputeType_t compute =
      f64 ? CUBLAS_COMPUTE_64F : (p.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
  LN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, compute, f64 ? CUDA_R_64F : CUDA_R_32F));
  const cublasOperation_t op_a = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = p.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, e);
  if (uses_aux(e)) set_desc(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, p.ld_aux);
  // The heuristic reads the pointers' alignment (part of the key), not their targets.
  set_pointers(plan->desc, p, e);
  // Stored B is (K, N), or (N, K) when transposed; read column-major that is (N, K), or (K, N).
  plan->layout_a = p.trans_b ? make_layout(p.dtype, p.k, p.n, p.ldb, p.batch, p.stride_b)
                             : make_layout(p.dtype, p.n, p.k, p.ldb, p.batch, p.stride_b);
  plan->layout_b = p.trans_a ? make_layout(p.dtype, p.m, p.k, p.lda, p.batch, p.stride_a)
                             : make_layout(p.dtype, p.k, p.m, p.lda, p.batch, p.stride_a);
  plan->layout_c = make_layout(gemm_c_dtype(p), p.n, p.m, p.ldc, p.batch, p.stride_c);
  find_algorithms(*plan, p);
  return plan;
}

// The cached plan of p with epilogue e (created on first use; plans live for the process).
Plan& plan_for(const GemmParams& p, GemmEpilogue e) {
  static std::mutex mu;
  static std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans;
  const cublasLtEpilogue_t lt = lt_epilogue(p, e);
  const PlanKey key = make_key(p, lt);
  std::lock_guard<std::mutex> lock(mu);
  std::unique_ptr<Plan>& slot = plans[key];
  if (!slot) slot = make_plan(p, lt);
  return *slot;
}

// Queues p with proposal `index`; the caller holds plan.mu.
cublasStatus_t launch(Plan& plan, const GemmParams& p, size_t index) {
  const float alpha32 = static_cast<float>(p.alpha), beta32 = static_cast<float>(p.beta);
  const bool f64 = p.dtype == DType::F64;
  const void* alpha = f64 ? static_cast<const void*>(&p.alpha) : &alpha32;
  const void* beta = f64 ? static_cast<const void*>(&p.beta) : &beta32;
  size_t ws_bytes = 0;
  void* ws = cublaslt_workspace(p.device, &ws_bytes);
  set_pointers(plan.desc, p, plan.epilogue);
  return cublasLtMatmul(cublaslt(p.device), plan.desc, alpha, p.b, plan.layout_a, p.a, plan.layout_b, beta,
                        p.c_in ? p.c_in : p.c, plan.layout_c, p.c, plan.layout_c, &plan.algos[index], ws, ws_bytes,
                        stream(p.device));
}

void run(Plan& plan, const GemmParams& p, size_t index) {
  std::lock_guard<std::mutex> lock(plan.mu);
  LN_CUBLAS_CHECK(launch(plan, p, index));
}

bool autotune_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("LONGNET_GEMM_AUTOTUNE");
    return v == nullptr || std::string_view(v) != "0";
  }();
  return on;
}

// Bytes from the first to one past the last element of a row-major (rows, cols) matrix, or of
// `batch` of them `stride` elements apart.
int64_t span_bytes(int64_t batch, int64_t stride, int64_t rows, int64_t cols, int64_t ld, DType t) {
  return ((batch - 1) * stride + (rows - 1) * ld + cols) * static_cast<int64_t>(dtype_size(t));
}

bool overlap(const void* x, int64_t x_bytes, const void* y, int64_t y_bytes) {
  const auto a = reinterpret_cast<uintptr_t>(x), b = reinterpret_cast<uintptr_t>(y);
  return a < b + static_cast<uintptr_t>(y_bytes) && b < a + static_cast<uintptr_t>(x_bytes);
}

// Whether p may run several times over for timing, leaving what one run leaves: C is overwritten
// (beta 0) rather than accumulated into, and no output overlaps an input. cuBLASLt's epilogue
// outputs (aux, bias gradients) are all overwritten; the one input that may share memory with C
// is the pre-activation a dgelu reads (computing in place over it).
bool rerunnable(const GemmParams& p, cublasLtEpilogue_t e) {
  // A separate C is only read; D overwritten.
  if (p.beta != 0.0 && p.c_in == nullptr) return false;
  if (e != CUBLASLT_EPILOGUE_DGELU && e != CUBLASLT_EPILOGUE_DGELU_BGRAD) return true;
  return !overlap(p.c, span_bytes(p.batch, p.stride_c, p.m, p.n, p.ldc, gemm_c_dtype(p)), p.aux,
                  span_bytes(1, 0, p.m, p.n, p.ld_aux, p.dtype));
}

// Timing synchronises with the GPU, which a stream being captured into a CUDA graph must not do;
// such calls run the current choice and leave tuning to a later, eager one.
bool capturing(int device) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  LN_CUDA_CHECK(cudaStreamIsCapturing(stream(device), &status));
  return status != cudaStreamCaptureStatusNone;
}

// Times every proposal on p's own buffers, on the stream gemm() uses, and returns the index of the
// fastest by median. Each proposal first runs once untimed (lazy module loading, caches); then the
// proposals take turns, kTuneRounds rounds of kTuneRuns runs between events each, so that a drift
// of clocks over the tuning favours none. A proposal that fails to launch drops out. The caller
// holds plan.mu.
size_t fastest_algorithm(Plan& plan, const GemmParams& p) {
  const cudaStream_t s = stream(p.device);
  const size_t count = plan.algos.size(), per = kTuneRuns + 1;
  const Events ev(kTuneRounds * count * per);
  const auto event = [&](int round, size_t i, int r) {
    return ev[(static_cast<size_t>(round) * count + i) * per + static_cast<size_t>(r)];
  };
  std::vector<bool> ok(count, true);
  const auto run_once = [&](size_t i) {
    ok[i] = launch(plan, p, i) == CUBLAS_STATUS_SUCCESS;
    // A kernel that failed to launch leaves its error with the runtime, where the next launch
    // check anywhere would find it.
    if (!ok[i]) (void)cudaGetLastError();
  };
  for (size_t i = 0; i < count; ++i) run_once(i);
  for (int round = 0; round < kTuneRounds; ++round) {
    for (size_t i = 0; i < count; ++i) {
      if (!ok[i]) continue;
      LN_CUDA_CHECK(cudaEventRecord(event(round, i, 0), s));
      for (int r = 1; r <= kTuneRuns && ok[i]; ++r) {
        run_once(i);
        LN_CUDA_CHECK(cudaEventRecord(event(round, i, r), s));
      }
    }
  }
  LN_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<double> median(count, std::numeric_limits<double>::infinity());
  for (size_t i = 0; i < count; ++i) {
    if (!ok[i]) continue;
    std::array<float, kTuneRounds * kTuneRuns> ms{};
    for (int round = 0; round < kTuneRounds; ++round) {
      for (int r = 0; r < kTuneRuns; ++r) {
        LN_CUDA_CHECK(cudaEventElapsedTime(&ms[static_cast<size_t>(round * kTuneRuns + r)], event(round, i, r),
                                           event(round, i, r + 1)));
      }
    }
    std::sort(ms.begin(), ms.end());
    median[i] = 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  }
  const size_t best = static_cast<size_t>(std::min_element(median.begin(), median.end()) - median.begin());
  return ok[0] && median[best] >= kTuneMargin * median[0] ? 0 : best;
}

// Runs p with the plan's chosen proposal, choosing it by measurement on the first call that may.
void run_chosen(Plan& plan, const GemmParams& p) {
  std::lock_guard<std::mutex> lock(plan.mu);
  if (!plan.tuned && plan.algos.size() > 1 && autotune_enabled() && rerunnable(p, plan.epilogue) &&
      !capturing(p.device)) {
    plan.chosen = fastest_algorithm(plan, p);
    plan.tuned = true;
  }
  LN_CUBLAS_CHECK(launch(plan, p, plan.chosen));
}

}  // namespace

std::string gemm_str(const GemmParams& p) {
  const auto stored = [](bool trans, int64_t rows, int64_t cols) {
    return trans ? shape_str({cols, rows}) + "^T" : shape_str({rows, cols});
  };
  std::ostringstream s;
  s << dtype_name(p.dtype) << " A " << stored(p.trans_a, p.m, p.k) << " @ B " << stored(p.trans_b, p.k, p.n)
    << " -> ";
  if (gemm_c_dtype(p) != p.dtype) s << dtype_name(gemm_c_dtype(p)) << " ";
  s << "C " << shape_str({p.m, p.n}) << ", ld " << p.lda << "/" << p.ldb << "/" << p.ldc;
  if (p.batch != 1) {
    s << ", batch " << p.batch << " strides " << p.stride_a << "/" << p.stride_b << "/" << p.stride_c;
  }
  if (p.epilogue != GemmEpilogue::None) s << ", epilogue " << epilogue_name(p.epilogue);
  return s.str();
}

void gemm(const GemmParams& p) {
  validate(p);
  if (p.m == 0 || (p.n == 0 && p.epilogue != GemmEpilogue::BGradA)) return;
  DeviceGuard guard(p.device);
  if (p.n > 0 && p.k > 0) {
    if (p.epilogue == GemmEpilogue::None || p.fuse_epilogue) {
      Plan& fused = plan_for(p, p.epilogue);
      if (!fused.algos.empty()) return run_chosen(fused, p);
    }
    Plan& plain = plan_for(p, GemmEpilogue::None);
    LN_CHECK(!plain.algos.empty(), "[gemm] cuBLASLt has no algorithm for ", gemm_str(p));
    run_chosen(plain, p);
  } else {
    gemm_scale_c(p);  // an empty sum: C = beta * C
  }
  gemm_epilogue_unfused(p);
}

int gemm_algorithm_count(const GemmParams& p) {
  validate(p);
  if (p.m == 0 || p.n == 0 || p.k == 0) return 0;
  DeviceGuard guard(p.device);
  return static_cast<int>(plan_for(p, p.epilogue).algos.size());
}

int gemm_chosen_algorithm(const GemmParams& p) {
  if (gemm_algorithm_count(p) == 0) return -1;
  DeviceGuard guard(p.device);
  Plan& plan = plan_for(p, p.epilogue);
  std::lock_guard<std::mutex> lock(plan.mu);
  return static_cast<int>(plan.chosen);
}

void gemm_with_algorithm(const GemmParams& p, int index) {
  const int count = gemm_algorithm_count(p);
  LN_CHECK(index >= 0 && index < count, "[gemm] algorithm ", index, " of ", count, " proposed for ", gemm_str(p));
  DeviceGuard guard(p.device);
  run(plan_for(p, p.epilogue), p, static_cast<size_t>(index));
}

}  // namespace longnet::cuda
