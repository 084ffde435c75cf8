#include "framework/cpu/dropout.h"

#include "framework/cpu/loops.h"
#include "framework/cpu/random.h"

namespace longnet::cpu {

void dropout(const DropoutParams& p) {
  const Strides mask_strides = contiguous_strides(p.shape);
  dispatch_float(p.out.dtype, "dropout", [&]<class T>() {
    T* out = static_cast<T*>(p.out.data);
    const T* x = static_cast<const T*>(p.x.data);
    const T scale = static_cast<T>(1.0 / (1.0 - p.p));
    // out and mask are contiguous with the same strides, so o[0] is the row-major index.
    for_each_strided<3>(p.shape, {p.out.strides, p.x.strides, mask_strides.data()},
                        [&](const std::array<int64_t, 3>& o) {
                          if (p.draw_mask) {
                            p.mask[o[2]] = static_cast<double>(philox_uniform(p.seed, p.offset, o[0])) >= p.p;
                          }
                          out[o[0]] = p.mask[o[2]] ? x[o[1]] * scale : T(0);
                        });
  });
}

}  // namespace longnet::cpu
