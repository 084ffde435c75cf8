#pragma once
// Element types, the 16-bit float storage types, and dispatch from a runtime dtype to a C++ type.
#include <cstdint>
#include <cstring>
#include <string>

#include "framework/core/error.h"

namespace longnet {

/// Element type of a tensor.
enum class DType : uint8_t { F32, F64, BF16, F16, I32, I64, U8, Bool };

/// bfloat16 storage type: the upper half of an IEEE float32, rounded to nearest even.
struct BFloat16 {
  uint16_t bits = 0;
  BFloat16() = default;
  BFloat16(float f) {  // NOLINT(google-explicit-constructor): numeric conversion like the builtin types
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
      bits = static_cast<uint16_t>((u >> 16) | 0x40u);  // keep NaN a (quiet) NaN
    } else {
      u += 0x7fffu + ((u >> 16) & 1u);
      bits = static_cast<uint16_t>(u >> 16);
    }
  }
  operator float() const {  // NOLINT(google-explicit-constructor)
    uint32_t u = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
};

/// IEEE binary16 storage type, converted through float32 with round-to-nearest-even.
struct Half {
  uint16_t bits = 0;
  Half() = default;
  Half(float f);             // NOLINT(google-explicit-constructor)
  operator float() const;    // NOLINT(google-explicit-constructor)
};

/// Bytes per element.
size_t dtype_size(DType t);
/// Short name: "f32", "bf16", "i64", ...
const char* dtype_name(DType t);
/// Parses a short name; throws on an unknown one.
DType dtype_from_name(const std::string& name);
/// True for f32, f64, bf16 and f16.
inline bool is_floating(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::BF16 || t == DType::F16;
}
/// True for the 16-bit float types, which CPU kernels compute in f32.
inline bool is_reduced_float(DType t) { return t == DType::BF16 || t == DType::F16; }
/// True for i32, i64, u8.
inline bool is_integral(DType t) { return t == DType::I32 || t == DType::I64 || t == DType::U8; }

/// Maps a C++ element type to its DType.
template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::F32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::F64; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::BF16; };
template <> struct dtype_of<Half> { static constexpr DType value = DType::F16; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::I32; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::I64; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::U8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::Bool; };
template <class T> inline constexpr DType dtype_of_v = dtype_of<T>::value;

/// Calls `f.template operator()<T>()` with T the C++ type of `t`, for f32 and f64 only: the types
/// CPU float kernels compute in (16-bit floats are upcast by the op before reaching a kernel).
template <class F>
decltype(auto) dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    default: LN_FAIL("[", op, "] expected a float32 or float64 tensor, got ", dtype_name(t));
  }
}

/// Like dispatch_float, for the integer index types i32 and i64.
template <class F>
decltype(auto) dispatch_index(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::I32: return f.template operator()<int32_t>();
    case DType::I64: return f.template operator()<int64_t>();
    default: LN_FAIL("[", op, "] expected an i32 or i64 index tensor, got ", dtype_name(t));
  }
}

/// Dispatch over every dtype.
template <class F>
decltype(auto) dispatch_all(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: return f.template operator()<float>();
    case DType::F64: return f.template operator()<double>();
    case DType::BF16: return f.template operator()<BFloat16>();
    case DType::F16: return f.template operator()<Half>();
    case DType::I32: return f.template operator()<int32_t>();
    case DType::I64: return f.template operator()<int64_t>();
    case DType::U8: return f.template operator()<uint8_t>();
    case DType::Bool: return f.template operator()<bool>();
  }
  LN_FAIL("[", op, "] unknown dtype");
}

/// Converts between element types the way a cast does (bool is x != 0).
template <class To, class From>
inline To convert(From v) {
  if constexpr (std::is_same_v<To, bool>) {
    return static_cast<float>(v) != 0.0f;
  } else if constexpr (std::is_same_v<From, BFloat16> || std::is_same_v<From, Half>) {
    return static_cast<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, BFloat16> || std::is_same_v<To, Half>) {
    return To(static_cast<float>(v));
  } else {
    return static_cast<To>(v);
  }
}

}  // namespace longnet
