#include "framework/io/crc32.h"

#include <array>
#include <bit>
#include <cstring>

namespace longnet::io {
namespace {

// Slice-by-8 tables: table[0] is the classic byte-at-a-time table, table[k][b] the CRC of byte b
// followed by k zero bytes, so eight input bytes fold in with eight lookups and no carried chain.
// Checkpoints run to gigabytes, where the byte loop would take seconds.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables make_tables(uint32_t poly) {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ poly : c >> 1;
    t[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; ++b) {
    for (size_t k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xffu];
  }
  return t;
}

constexpr Tables kIeee = make_tables(0xEDB88320u);
constexpr Tables kCastagnoli = make_tables(0x82F63B78u);

uint32_t update(const Tables& t, const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  for (; size >= 8; size -= 8, p += 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    if constexpr (std::endian::native == std::endian::big) {
      lo = __builtin_bswap32(lo);
      hi = __builtin_bswap32(hi);
    }
    lo ^= c;
    c = t[7][lo & 0xffu] ^ t[6][(lo >> 8) & 0xffu] ^ t[5][(lo >> 16) & 0xffu] ^ t[4][lo >> 24] ^
        t[3][hi & 0xffu] ^ t[2][(hi >> 8) & 0xffu] ^ t[1][(hi >> 16) & 0xffu] ^ t[0][hi >> 24];
  }
  for (; size > 0; --size, ++p) c = (c >> 8) ^ t[0][(c ^ *p) & 0xffu];
  return ~c;
}

}  // namespace

uint32_t crc32(const void* data, size_t size, uint32_t crc) { return update(kIeee, data, size, crc); }

uint32_t crc32c(const void* data, size_t size, uint32_t crc) { return update(kCastagnoli, data, size, crc); }

}  // namespace longnet::io
