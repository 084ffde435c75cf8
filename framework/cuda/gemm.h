#pragma once
// Matrix products on the GPU through cuBLASLt: row-major, strided-batched, with fused epilogues.
// Plain C++ (no CUDA headers), so ops and tools can call it directly.
#include <cstdint>
#include <optional>
#include <string>

#include "framework/core/dtype.h"

namespace longnet::cuda {

/// What happens to alpha * op(A) @ op(B) + beta * C before it is stored in C. The GELU is the tanh
/// approximation (the one cuBLASLt fuses). Epilogues other than None need batch == 1.
enum class GemmEpilogue : uint8_t {
  None,
  Bias,        // C = ... + bias, bias (N) added to every row
  BiasGelu,    // pre = ... + bias; C = gelu(pre); aux (M, N) = pre when aux is set (for backward)
  DGeluBGrad,  // C = (...) * gelu'(aux), aux (M, N) the saved pre-activation; bias_grad (N) = column
               // sums of that C when bias_grad is set
  BGradA,      // plain product, plus bias_grad (M) = sum over k of op(A): while computing
               // dW = dy^T @ x (trans_a), the bias gradient sum_rows(dy) comes for free. alpha == 1.
};

/// Row-major C (M, N) = alpha * op(A) @ op(B) + beta * C for each of `batch` matrices, then the
/// epilogue. op(A) is (M, K): A stored (M, K), or (K, M) when trans_a; op(B) is (K, N): B stored
/// (K, N), or (N, K) when trans_b. Leading dims are the row strides of the matrices as stored;
/// batch strides are in elements (0 shares one matrix across the batch, not allowed for C). Every
/// buffer has `dtype` (bf16, f16, f32 or f64; 16-bit types accumulate in f32), except C when
/// c_dtype says otherwise.
struct GemmParams {
  int device = 0;
  DType dtype = DType::BF16;
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;
  const void* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  bool trans_a = false;
  const void* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  bool trans_b = false;
  void* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  // The C that beta scales, when it is not c (same layout, not overlapping it): c is then only
  // written, D = alpha A B + beta C_in (+ the epilogue), as a residual add in the product.
  const void* c_in = nullptr;
  double alpha = 1.0, beta = 0.0;
  bool tf32 = false;  // f32 only: TF32 tensor cores (about 1e-3 relative error)
  GemmEpilogue epilogue = GemmEpilogue::None;
  const void* bias = nullptr;  // (N): Bias, BiasGelu
  void* aux = nullptr;         // (M, N), row stride ld_aux: written by BiasGelu, read by DGeluBGrad
  int64_t ld_aux = 0;
  void* bias_grad = nullptr;   // (N) for DGeluBGrad, (M) for BGradA
  bool fuse_epilogue = true;   // false: always the plain product, then the separate epilogue kernel
  // C's dtype when it is not `dtype`: only f32 C for bf16/f16 A and B, without an epilogue. The
  // f32 sums are then stored unrounded, and beta 1 accumulates into an f32 C (a gradient summed
  // over chunks) with no rounding to 16 bits in between.
  std::optional<DType> c_dtype = std::nullopt;
};

/// The dtype of p's C: p.c_dtype when set, else p.dtype.
inline DType gemm_c_dtype(const GemmParams& p) { return p.c_dtype.value_or(p.dtype); }

/// Queues the product on the device's stream. The cuBLASLt descriptors and the algorithm are
/// cached per (shape, layout, alignment, dtype, epilogue). An epilogue cuBLASLt cannot fuse for
/// these operands (odd leading dims, f32/f64 GELU), or any when !fuse_epilogue, runs as the plain
/// product and a separate kernel (sums in f32 for 16-bit types).
/// Throws longnet::Error ("[gemm] ...") on invalid or unsupported parameters.
///
/// Algorithm choice: the first call of a key that may be run repeatedly (beta == 0, so C is
/// overwritten; no output overlapping an input) times each algorithm cuBLASLt's heuristic proposes
/// on that call's own buffers (one warm-up and a few runs each, CUDA events on the device's stream,
/// then a wait for the GPU) and keeps the fastest for the key; its result is what C holds after.
/// The heuristic's first choice stays unless another is clearly faster, and is what runs for keys
/// that cannot be tuned (beta != 0), and during CUDA graph capture (tuning then waits for the
/// first eager call). Algorithms may sum in different orders, so with tuning on, results can differ
/// in the last bits between processes. Environment: LONGNET_GEMM_AUTOTUNE=0 turns tuning off
/// (always the heuristic's first choice, reproducible from run to run); read once per process.
void gemm(const GemmParams& p);

/// Number of algorithms cuBLASLt's heuristic proposes for `p` with its epilogue fused (at most
/// 16, best first; 0 when the epilogue cannot be fused). For benchmarks.
int gemm_algorithm_count(const GemmParams& p);
/// Index among those proposals of the one gemm() runs for `p` with its epilogue fused: the
/// measured fastest once a call has tuned p's key, else 0; -1 when there is no proposal.
int gemm_chosen_algorithm(const GemmParams& p);
/// Runs `p` with the heuristic's proposal number `index` (0 is its first choice).
void gemm_with_algorithm(const GemmParams& p, int index);

/// The problem as error messages show it: "bf16 A (29, 37)^T @ B (29, 45) -> C (37, 45), ...".
std::string gemm_str(const GemmParams& p);

}  // namespace longnet::cuda
