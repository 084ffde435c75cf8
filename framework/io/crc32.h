#pragma once
// CRC-32 checksums: the IEEE polynomial (zlib, gzip, PNG; checkpoint manifests) and Castagnoli's
// CRC-32C (TFRecord framing of TensorBoard event files). Both are incremental: pass the previous
// result as `crc` to continue a running checksum over several buffers.
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace longnet::io {

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) of `size` bytes, continuing from `crc`.
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);
/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) of `size` bytes, continuing from `crc`.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

inline uint32_t crc32(std::string_view bytes, uint32_t crc = 0) { return crc32(bytes.data(), bytes.size(), crc); }
inline uint32_t crc32c(std::string_view bytes, uint32_t crc = 0) { return crc32c(bytes.data(), bytes.size(), crc); }

/// TFRecord's masked CRC-32C: rotated and offset so that a CRC of data containing CRCs stays
/// well distributed.
inline uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

}  // namespace longnet::io
