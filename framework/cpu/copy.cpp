#include "framework/cpu/copy.h"

#include <cstring>

#include "framework/cpu/loops.h"

namespace longnet::cpu {

void copy(const Shape& shape, StridedOperand dst, StridedOperand src) {
  dispatch_all(dst.dtype, "copy", [&]<class To>() {
    dispatch_all(src.dtype, "copy", [&]<class From>() {
      To* d = static_cast<To*>(dst.data);
      const From* s = static_cast<const From*>(src.data);
      for_each_strided<2>(shape, {dst.strides, src.strides},
                          [&](const std::array<int64_t, 2>& o) { d[o[0]] = convert<To>(s[o[1]]); });
    });
  });
}

void fill(const Shape& shape, StridedOperand dst, double value) {
  dispatch_all(dst.dtype, "fill", [&]<class T>() {
    T* d = static_cast<T*>(dst.data);
    const T v = convert<T>(value);
    for_each_strided<1>(shape, {dst.strides}, [&](const std::array<int64_t, 1>& o) { d[o[0]] = v; });
  });
}

}  // namespace longnet::cpu
