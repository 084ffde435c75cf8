#include "framework/cpu/rotary.h"

#include <algorithm>

#include "framework/cpu/loops.h"

namespace longnet::cpu {

void rotate_pairs(const RotaryParams& p) {
  dispatch_float(p.dtype, "rotate_pairs", [&]<class T>() {
    const auto* x = static_cast<const T*>(p.x);
    const auto* cos = static_cast<const T*>(p.cos);
    const auto* sin = static_cast<const T*>(p.sin);
    auto* out = static_cast<T*>(p.out);
    const T sign = p.inverse ? T(-1) : T(1);
    const int64_t row_len = p.heads * 2 * p.half;
    // One (b, n) position a task: all its heads share one table row.
    parallel_for(
        p.batch * p.seq,
        [&](int64_t bn) {
          const int64_t n = bn % p.seq;
          const T* c = cos + n * p.half;
          const T* s = sin + n * p.half;
          for (int64_t h = 0; h < p.heads; ++h) {
            const int64_t at = bn * row_len + h * 2 * p.half;
            const T* xr = x + at;
            T* o = out + at;
            for (int64_t i = 0; i < p.half; ++i) {
              const T x0 = xr[2 * i], x1 = xr[2 * i + 1], si = sign * s[i];
              o[2 * i] = x0 * c[i] - x1 * si;
              o[2 * i + 1] = x1 * c[i] + x0 * si;
            }
          }
        },
        std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, row_len)));
  });
}

}  // namespace longnet::cpu
