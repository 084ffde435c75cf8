#include "framework/cpu/optim_update.h"

#include <algorithm>
#include <array>

#include "framework/cpu/loops.h"

namespace longnet::cpu {
namespace {

// Elements one task of the contiguous loop updates.
constexpr int64_t kChunk = 4096;

template <size_t N>
bool all_contiguous(const Shape& shape, const std::array<const int64_t*, N>& strides) {
  const Strides want = contiguous_strides(shape);
  for (const int64_t* s : strides) {
    for (size_t d = 0; d < shape.size(); ++d) {
      if (shape[d] != 1 && s[d] != want[d]) return false;
    }
  }
  return true;
}

// f(offsets) for every element. Optimizer operands are almost always contiguous, and then the
// loop is split over threads in chunks (the strided loop would see one long row and stay serial).
template <size_t N, class F>
void for_each_element(const Shape& shape, const std::array<const int64_t*, N>& strides, F&& f) {
  if (!all_contiguous(shape, strides)) return for_each_strided(shape, strides, f);
  const int64_t n = numel_of(shape);
  parallel_for(
      (n + kChunk - 1) / kChunk,
      [&](int64_t c) {
        std::array<int64_t, N> off{};
        for (int64_t i = c * kChunk, end = std::min(n, (c + 1) * kChunk); i < end; ++i) {
          off.fill(i);
          f(off);
        }
      },
      kParallelGrain / kChunk);
}

}  // namespace

void adamw_update(const AdamWScalars& s, const Shape& shape, StridedOperand param, StridedOperand grad,
                  StridedOperand exp_avg, StridedOperand exp_avg_sq) {
  dispatch_float(param.dtype, "adamw_update", [&]<class T>() {
    const AdamWStep<T> step(s);
    T* p = static_cast<T*>(param.data);
    const T* g = static_cast<const T*>(grad.data);
    T* m = static_cast<T*>(exp_avg.data);
    T* v = static_cast<T*>(exp_avg_sq.data);
    for_each_element<4>(shape, {param.strides, grad.strides, exp_avg.strides, exp_avg_sq.strides},
                        [&](const std::array<int64_t, 4>& o) { step(p[o[0]], g[o[1]], m[o[2]], v[o[3]]); });
  });
}

void sgd_update(const SgdScalars& s, const Shape& shape, StridedOperand param, StridedOperand grad,
                StridedOperand momentum_buffer) {
  dispatch_float(param.dtype, "sgd_update", [&]<class T>() {
    const SgdStep<T> step(s);
    T* p = static_cast<T*>(param.data);
    const T* g = static_cast<const T*>(grad.data);
    if (momentum_buffer.data == nullptr) {
      for_each_element<2>(shape, {param.strides, grad.strides}, [&](const std::array<int64_t, 2>& o) {
        T unused = T(0);
        step(p[o[0]], g[o[1]], unused);
      });
      return;
    }
    T* b = static_cast<T*>(momentum_buffer.data);
    for_each_element<3>(shape, {param.strides, grad.strides, momentum_buffer.strides},
                        [&](const std::array<int64_t, 3>& o) { step(p[o[0]], g[o[1]], b[o[2]]); });
  });
}

}  // namespace longnet::cpu
