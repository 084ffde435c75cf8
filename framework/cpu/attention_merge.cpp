// Log-sum-exp merge of partial attention results (LongNet's Eq. 10, ring attention's merge).
#include <cmath>
#include <limits>
#include <vector>

#include <omp.h>

#include "framework/cpu/attention.h"
#include "framework/cpu/loops.h"

namespace longnet::cpu {
namespace {

template <class T>
constexpr T kNegInf = -std::numeric_limits<T>::infinity();

// Runs body(row, weights) for every (batch, query, head) row with weights[i] = exp(lse_i - L) and
// L the merged lse (-inf, with all weights 0, when every part is -inf); returns L through `lse_row`.
template <class T, class F>
void for_each_row(const AttentionMergeParams& p, F&& body) {
  const int64_t rows = p.batch * p.q_len * p.heads;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, p.parts * p.head_dim));
#pragma omp parallel if (rows >= grain)
  {
    std::vector<T> w(static_cast<size_t>(p.parts));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t h = r % p.heads, n = r / p.heads % p.q_len, b = r / p.heads / p.q_len;
      const int64_t at = (b * p.heads + h) * p.q_len + n;  // position in the (batch, heads, q_len) stats
      T mx = kNegInf<T>;
      for (int64_t i = 0; i < p.parts; ++i) {
        w[static_cast<size_t>(i)] = static_cast<const T*>(p.lse[i])[at];
        mx = std::max(mx, w[static_cast<size_t>(i)]);
      }
      T lse = kNegInf<T>;
      if (mx != kNegInf<T>) {
        T sum = 0;
        for (T x : w) sum += std::exp(x - mx);
        lse = mx + std::log(sum);
      }
      for (T& x : w) x = lse == kNegInf<T> ? T(0) : std::exp(x - lse);
      body(r, at, lse, w);
    }
  }
}

}  // namespace

void attention_merge(const AttentionMergeParams& p) {
  dispatch_float(p.dtype, "merge_attention", [&]<class T>() {
    const int64_t d = p.head_dim;
    for_each_row<T>(p, [&](int64_t r, int64_t at, T lse, const std::vector<T>& w) {
      T* out = static_cast<T*>(p.out) + r * d;
      // Element c of every part is read before out[c] is written, so out may alias part 0.
      for (int64_t c = 0; c < d; ++c) {
        T acc = 0;
        for (int64_t i = 0; i < p.parts; ++i) acc += w[static_cast<size_t>(i)] * static_cast<const T*>(p.o[i])[r * d + c];
        out[c] = acc;
      }
      static_cast<T*>(p.lse_out)[at] = lse;
    });
  });
}

void attention_merge_backward(const AttentionMergeBackwardParams& p) {
  const AttentionMergeParams& f = p.fwd;
  dispatch_float(f.dtype, "merge_attention_backward", [&]<class T>() {
    const int64_t d = f.head_dim;
    for_each_row<T>(f, [&](int64_t r, int64_t at, T lse, const std::vector<T>& w) {
      const T* go = static_cast<const T*>(p.dout) + r * d;
      const T* o = static_cast<const T*>(f.out) + r * d;
      const T dl = p.dlse_out && lse != kNegInf<T> ? static_cast<const T*>(p.dlse_out)[at] : T(0);
      T go_o = 0;
      for (int64_t c = 0; c < d; ++c) go_o += go[c] * o[c];
      for (int64_t i = 0; i < f.parts; ++i) {
        const T wi = w[static_cast<size_t>(i)];
        const T* oi = static_cast<const T*>(f.o[i]) + r * d;
        T* goi = static_cast<T*>(p.do_parts[i]) + r * d;
        T go_oi = 0;
        for (int64_t c = 0; c < d; ++c) {
          goi[c] = wi * go[c];
          go_oi += go[c] * oi[c];
        }
        static_cast<T*>(p.dlse_parts[i])[at] = wi * (go_oi - go_o + dl);
      }
    });
  });
}

}  // namespace longnet::cpu
