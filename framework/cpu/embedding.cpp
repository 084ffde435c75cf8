#include "framework/cpu/embedding.h"

#include <algorithm>
#include <vector>

#include "framework/cpu/loops.h"

namespace longnet::cpu {

void embedding(const EmbeddingParams& p) {
  dispatch_index(p.id_dtype, "embedding", [&]<class I>() {
    dispatch_all(p.dtype, "embedding", [&]<class T>() {
      const T* w = static_cast<const T*>(p.weight);
      const I* ids = static_cast<const I*>(p.ids);
      T* out = static_cast<T*>(p.out);
      parallel_for(
          p.n,
          [&](int64_t i) {
            const T* row = w + static_cast<int64_t>(ids[i]) * p.row_stride;
            T* dst = out + i * p.dim;
            for (int64_t d = 0; d < p.dim; ++d) dst[d] = row[d * p.col_stride];
          },
          std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, p.dim)));
    });
  });
}

void embedding_backward(const EmbeddingBackwardParams& p) {
  dispatch_index(p.id_dtype, "embedding", [&]<class I>() {
    dispatch_float(p.dtype, "embedding", [&]<class T>() {
      const I* ids = static_cast<const I*>(p.ids);
      // Bucket positions by id: positions of id v are order[start[v] .. start[v + 1]), ascending.
      std::vector<int64_t> start(static_cast<size_t>(p.vocab) + 1, 0), order(static_cast<size_t>(p.n));
      for (int64_t i = 0; i < p.n; ++i) ++start[static_cast<size_t>(ids[i]) + 1];
      for (int64_t v = 0; v < p.vocab; ++v)
        start[static_cast<size_t>(v) + 1] += start[static_cast<size_t>(v)];
      std::vector<int64_t> next(start.begin(), start.end() - 1);
      for (int64_t i = 0; i < p.n; ++i) order[static_cast<size_t>(next[static_cast<size_t>(ids[i])]++)] = i;
      const T* g = static_cast<const T*>(p.grad_out);
      T* gw = static_cast<T*>(p.grad_weight);
      parallel_for(
          p.vocab,
          [&](int64_t v) {
            T* dst = gw + v * p.dim;
            std::fill(dst, dst + p.dim, T(0));
            for (int64_t k = start[static_cast<size_t>(v)]; k < start[static_cast<size_t>(v) + 1]; ++k) {
              const T* src = g + order[static_cast<size_t>(k)] * p.dim;
              for (int64_t d = 0; d < p.dim; ++d) dst[d] += src[d];
            }
          },
          std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, p.dim)));
    });
  });
}

}  // namespace longnet::cpu
