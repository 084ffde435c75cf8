#include "framework/cpu/dropout.h"

#include "framework/cpu/loops.h"

namespace longnet::cpu {

void dropout(const DropoutParams& p) {
  const int64_t n = numel_of(p.shape);
  if (p.draw_mask) {
    // One Philox block gives the mask of four consecutive elements.
    const uint32_t threshold = dropout_threshold(p.p);
    parallel_for((n + 3) / 4, [&](int64_t c) {
      uint32_t w[4];
      philox_words(p.seed, p.offset + static_cast<uint64_t>(c), w);
      for (int64_t k = 0; k < 4 && c * 4 + k < n; ++k) p.mask[c * 4 + k] = (w[k] >> 8) >= threshold;
    }, kParallelGrain / 4);
  }
  const Strides mask_strides = contiguous_strides(p.shape);
  dispatch_float(p.out.dtype, "dropout", [&]<class T>() {
    T* out = static_cast<T*>(p.out.data);
    const T* x = static_cast<const T*>(p.x.data);
    const T scale = static_cast<T>(1.0 / (1.0 - p.p));
    for_each_strided<3>(p.shape, {p.out.strides, p.x.strides, mask_strides.data()},
                        [&](const std::array<int64_t, 3>& o) {
                          out[o[0]] = p.mask[o[2]] ? x[o[1]] * scale : T(0);
                        });
  });
}

}  // namespace longnet::cpu
