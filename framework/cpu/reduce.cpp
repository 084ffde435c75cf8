#include "framework/cpu/reduce.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "framework/cpu/loops.h"

namespace longnet::cpu {

namespace {

// Calls run.template operator()<T, Acc>() for the element type of `dtype` and its accumulator.
template <class Run>
void with_sum_types(DType dtype, Run&& run) {
  switch (dtype) {
    case DType::F32: return run.template operator()<float, double>();
    case DType::F64: return run.template operator()<double, double>();
    case DType::I32: return run.template operator()<int32_t, int64_t>();
    case DType::I64: return run.template operator()<int64_t, int64_t>();
    default: LN_FAIL("[reduce] unsupported dtype ", dtype_name(dtype));
  }
}

}  // namespace

void reduce_rows(RowReduce op, const RowReduceParams& p) {
  auto run = [&]<class T, class Acc>() {
    const T* in = static_cast<const T*>(p.in);
    parallel_for(
        p.rows,
        [&](int64_t r) {
          const T* row = in + r * p.len;
          switch (op) {
            case RowReduce::Sum: {
              Acc acc = 0;
              for (int64_t j = 0; j < p.len; ++j) acc += static_cast<Acc>(row[j]);
              static_cast<T*>(p.out)[r] = static_cast<T>(acc);
              break;
            }
            case RowReduce::Max:
            case RowReduce::ArgMax: {
              T best = p.len ? row[0] : T(0);
              int64_t at = 0;
              for (int64_t j = 1; j < p.len; ++j) {
                // NaN wins, like the first NaN would in a sort.
                if (row[j] > best || (row[j] != row[j] && best == best)) {
                  best = row[j];
                  at = j;
                }
              }
              if (op == RowReduce::Max) {
                static_cast<T*>(p.out)[r] = best;
              } else {
                static_cast<int64_t*>(p.out)[r] = at;
              }
              break;
            }
            case RowReduce::LogSumExp: {
              if constexpr (std::is_floating_point_v<T>) {
                T m = -std::numeric_limits<T>::infinity();
                for (int64_t j = 0; j < p.len; ++j) m = std::max(m, row[j]);
                if (!std::isfinite(m)) {
                  static_cast<T*>(p.out)[r] = m;
                  break;
                }
                Acc acc = 0;
                for (int64_t j = 0; j < p.len; ++j) acc += std::exp(static_cast<Acc>(row[j] - m));
                static_cast<T*>(p.out)[r] = m + static_cast<T>(std::log(acc));
              }
              break;
            }
          }
        },
        std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, p.len)));
  };
  with_sum_types(p.dtype, run);
}

void sum_columns(const ColumnSumParams& p) {
  // Each task sums one block of up to kCols columns of one outer slice, row after row, into a
  // local accumulator, so every row segment it reads is contiguous.
  constexpr int64_t kCols = 256;
  const int64_t col_blocks = (p.inner + kCols - 1) / kCols;
  auto run = [&]<class T, class Acc>() {
    const T* in = static_cast<const T*>(p.in);
    T* out = static_cast<T*>(p.out);
    parallel_for(
        p.outer * col_blocks,
        [&](int64_t task) {
          const int64_t o = task / col_blocks, c0 = task % col_blocks * kCols;
          const int64_t cols = std::min(kCols, p.inner - c0);
          Acc acc[kCols] = {};
          const T* base = in + o * p.len * p.inner + c0;
          for (int64_t j = 0; j < p.len; ++j) {
            const T* row = base + j * p.inner;
            for (int64_t c = 0; c < cols; ++c) acc[c] += static_cast<Acc>(row[c]);
          }
          for (int64_t c = 0; c < cols; ++c) out[o * p.inner + c0 + c] = static_cast<T>(acc[c]);
        },
        std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, p.len * std::min(kCols, p.inner))));
  };
  with_sum_types(p.dtype, run);
}

}  // namespace longnet::cpu
