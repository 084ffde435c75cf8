#include "framework/cpu/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <type_traits>

namespace longnet::cpu {
namespace {

// Products below this many multiply-adds run on one thread: a parallel region costs more.
constexpr int64_t kParallelMacs = int64_t{1} << 18;
// Tiles of C are a multiple of this many rows or columns (a whole number of BLAS micro-tiles).
constexpr int64_t kTileAlign = 16;

CBLAS_TRANSPOSE flag(const GemmOperand& op) { return op.trans ? CblasTrans : CblasNoTrans; }

// One product C = A @ B on the calling thread; rows [r0, r1) x columns [c0, c1) of C.
template <class T>
void gemm_tile(const GemmParams& p, int64_t batch, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  const T* a = static_cast<const T*>(p.a.data) + (p.a_offsets ? p.a_offsets[batch] : 0) +
               (p.a.trans ? r0 : r0 * p.a.ld);
  const T* b = static_cast<const T*>(p.b.data) + (p.b_offsets ? p.b_offsets[batch] : 0) +
               (p.b.trans ? c0 * p.b.ld : c0);
  T* c = static_cast<T*>(p.c) + (p.c_offsets ? p.c_offsets[batch] : 0) + r0 * p.ldc + c0;
  const auto m = static_cast<blasint>(r1 - r0), n = static_cast<blasint>(c1 - c0), k = static_cast<blasint>(p.k);
  const auto lda = static_cast<blasint>(p.a.ld), ldb = static_cast<blasint>(p.b.ld),
             ldc = static_cast<blasint>(p.ldc);
  if (p.k == 0) {  // an empty sum; BLAS implementations disagree on whether they write C
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * p.ldc, c + i * p.ldc + n, T(0));
  } else if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, flag(p.a), flag(p.b), m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, flag(p.a), flag(p.b), m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc);
  }
}

}  // namespace

void gemm(const GemmParams& p) {
  if (p.m == 0 || p.n == 0 || p.batch == 0) return;
  for (int64_t v : {p.m, p.n, p.k, p.a.ld, p.b.ld, p.ldc}) {
    LN_CHECK(v <= INT_MAX, "[gemm] size ", v, " exceeds the BLAS integer range");
  }
  // Work items are (batch, tile of C): batches first, then each product split along its longer
  // side of C until every thread has one.
  const int64_t threads = p.m * p.n * std::max<int64_t>(p.k, 1) * p.batch < kParallelMacs || omp_in_parallel()
                              ? 1 : omp_get_max_threads();
  const bool split_rows = p.m >= p.n;
  const int64_t side = split_rows ? p.m : p.n;
  const int64_t want = (threads + p.batch - 1) / p.batch;
  const int64_t tiles = std::clamp<int64_t>(std::min(want, side / kTileAlign), 1, threads);
  const int64_t tile = (side + tiles - 1) / tiles;
  const int64_t step = tiles == 1 ? side : (tile + kTileAlign - 1) / kTileAlign * kTileAlign;
  const int64_t per_batch = (side + step - 1) / step;
  // BLAS threads would compete with the OpenMP workers (which spin for a while after each
  // region) for the same cores; every thread here runs a single-threaded BLAS call instead.
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
  dispatch_float(p.dtype, "gemm", [&]<class T>() {
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads)) if (threads > 1)
    for (int64_t item = 0; item < p.batch * per_batch; ++item) {
      const int64_t batch = item / per_batch, lo = item % per_batch * step, hi = std::min(side, lo + step);
      if (split_rows) {
        gemm_tile<T>(p, batch, lo, hi, 0, p.n);
      } else {
        gemm_tile<T>(p, batch, 0, p.m, lo, hi);
      }
    }
  });
}

}  // namespace longnet::cpu
