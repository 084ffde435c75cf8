#include "framework/cpu/loss.h"

#include <cmath>
#include <limits>
#include <vector>

#include "framework/cpu/loops.h"

namespace longnet::cpu {
namespace {

int64_t row_grain(int64_t classes) {
  return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, classes));
}

}  // namespace

int64_t find_bad_target(const void* targets, DType target_dtype, int64_t rows, int64_t classes,
                        int64_t ignore_index, int64_t* bad_value) {
  return dispatch_index(target_dtype, "cross_entropy", [&]<class I>() -> int64_t {
    const I* t = static_cast<const I*>(targets);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t v = static_cast<int64_t>(t[r]);
      if (v != ignore_index && (v < 0 || v >= classes)) {
        *bad_value = v;
        return r;
      }
    }
    return -1;
  });
}

int64_t count_not_ignored(const void* targets, DType target_dtype, int64_t rows, int64_t ignore_index) {
  return dispatch_index(target_dtype, "cross_entropy", [&]<class I>() -> int64_t {
    const I* t = static_cast<const I*>(targets);
    int64_t n = 0;
    for (int64_t r = 0; r < rows; ++r) n += static_cast<int64_t>(t[r]) != ignore_index;
    return n;
  });
}

CrossEntropySum cross_entropy_forward(const CrossEntropyParams& p) {
  return dispatch_float(p.dtype, "cross_entropy", [&]<class T>() {
    return dispatch_index(p.target_dtype, "cross_entropy", [&]<class I>() {
      const T* logits = static_cast<const T*>(p.logits);
      const I* targets = static_cast<const I*>(p.targets);
      T* lse = static_cast<T*>(p.lse);
      const int64_t classes = p.classes, ld = row_stride(p);
      std::vector<double> row_loss(static_cast<size_t>(p.rows), 0.0);
      parallel_for(
          p.rows,
          [&](int64_t r) {
            const int64_t t = static_cast<int64_t>(targets[r]);
            if (t == p.ignore_index) {
              lse[r] = T(0);
              return;
            }
            const T* xr = logits + r * ld;
            T m = -std::numeric_limits<T>::infinity();
            for (int64_t j = 0; j < classes; ++j) m = std::max(m, xr[j]);
            double sum = 0.0;
            for (int64_t j = 0; j < classes; ++j) sum += static_cast<double>(std::exp(xr[j] - m));
            const double l = static_cast<double>(m) + std::log(sum);
            lse[r] = static_cast<T>(l);
            row_loss[static_cast<size_t>(r)] = l - static_cast<double>(xr[t]);
          },
          row_grain(classes));
      CrossEntropySum out;
      for (int64_t r = 0; r < p.rows; ++r) {
        if (static_cast<int64_t>(targets[r]) == p.ignore_index) continue;
        out.loss += row_loss[static_cast<size_t>(r)];
        ++out.count;
      }
      return out;
    });
  });
}

void cross_entropy_backward(const CrossEntropyBackwardParams& p) {
  dispatch_float(p.dtype, "cross_entropy_backward", [&]<class T>() {
    dispatch_index(p.target_dtype, "cross_entropy_backward", [&]<class I>() {
      const T* logits = static_cast<const T*>(p.logits);
      const I* targets = static_cast<const I*>(p.targets);
      const T* lse = static_cast<const T*>(p.lse);
      T* dx = static_cast<T*>(p.dlogits);
      const int64_t classes = p.classes, ld = row_stride(p);
      const T scale = static_cast<T>(p.scale);
      parallel_for(
          p.rows,
          [&](int64_t r) {
            const int64_t t = static_cast<int64_t>(targets[r]);
            T* dr = dx + r * ld;
            if (t == p.ignore_index) {
              for (int64_t j = 0; j < classes; ++j) dr[j] = T(0);
              return;
            }
            const T* xr = logits + r * ld;
            for (int64_t j = 0; j < classes; ++j) dr[j] = std::exp(xr[j] - lse[r]) * scale;
            dr[t] -= scale;
          },
          row_grain(classes));
    });
  });
}

}  // namespace longnet::cpu
