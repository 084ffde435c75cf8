#include "framework/cpu/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <type_traits>

namespace longnet::cpu {
namespace {

CBLAS_TRANSPOSE flag(const GemmOperand& op) { return op.trans ? CblasTrans : CblasNoTrans; }

template <class T>
void gemm_one(const GemmParams& p, int64_t a_off, int64_t b_off, int64_t c_off) {
  const T* a = static_cast<const T*>(p.a.data) + a_off;
  const T* b = static_cast<const T*>(p.b.data) + b_off;
  T* c = static_cast<T*>(p.c) + c_off;
  const auto m = static_cast<blasint>(p.m), n = static_cast<blasint>(p.n), k = static_cast<blasint>(p.k);
  const auto lda = static_cast<blasint>(p.a.ld), ldb = static_cast<blasint>(p.b.ld),
             ldc = static_cast<blasint>(p.ldc);
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, flag(p.a), flag(p.b), m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
  } else {
    cblas_dgemm(CblasRowMajor, flag(p.a), flag(p.b), m, n, k, 1.0, a, lda, b, ldb, 0.0, c, ldc);
  }
}

template <class T>
void zero_output(const GemmParams& p, int64_t c_off) {
  T* c = static_cast<T*>(p.c) + c_off;
  for (int64_t i = 0; i < p.m; ++i) std::fill(c + i * p.ldc, c + i * p.ldc + p.n, T(0));
}

}  // namespace

void gemm(const GemmParams& p) {
  if (p.m == 0 || p.n == 0 || p.batch == 0) return;
  for (int64_t v : {p.m, p.n, p.k, p.a.ld, p.b.ld, p.ldc}) {
    LN_CHECK(v <= INT_MAX, "[gemm] size ", v, " exceeds the BLAS integer range");
  }
  dispatch_float(p.dtype, "gemm", [&]<class T>() {
    for (int64_t i = 0; i < p.batch; ++i) {
      const int64_t c_off = p.c_offsets ? p.c_offsets[i] : 0;
      if (p.k == 0) {  // an empty sum; BLAS implementations disagree on whether they write C
        zero_output<T>(p, c_off);
      } else {
        gemm_one<T>(p, p.a_offsets ? p.a_offsets[i] : 0, p.b_offsets ? p.b_offsets[i] : 0, c_off);
      }
    }
  });
}

}  // namespace longnet::cpu
