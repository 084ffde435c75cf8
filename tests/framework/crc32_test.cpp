// CRC-32 and CRC-32C against published check values and a bit-at-a-time reference, over lengths
// that exercise the eight-byte fast path and its tail, and incremental use.
#include "framework/io/crc32.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace longnet::io {
namespace {

// The textbook bitwise reflected CRC.
uint32_t bitwise_crc(const std::string& s, uint32_t poly) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ poly : c >> 1;
  }
  return ~c;
}

TEST(Crc32, CheckValues) {
  // The standard check input "123456789" (CRC catalogue values).
  EXPECT_EQ(crc32("123456789"), 0xCBF43926u);
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32(""), 0u);
  // RFC 3720 (iSCSI) test vector: 32 bytes of zeros.
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);
}

TEST(Crc32, MatchesBitwiseReferenceAtEveryLength) {
  std::string s;
  uint32_t x = 12345;
  for (int n = 0; n < 100; ++n) {
    EXPECT_EQ(crc32(s), bitwise_crc(s, 0xEDB88320u)) << "length " << n;
    EXPECT_EQ(crc32c(s), bitwise_crc(s, 0x82F63B78u)) << "length " << n;
    x = x * 1664525u + 1013904223u;
    s += static_cast<char>(x >> 24);
  }
}

TEST(Crc32, Incremental) {
  const std::string s = "the quick brown fox jumps over the lazy dog, twice over";
  for (size_t cut : {0ul, 1ul, 7ul, 8ul, 13ul, s.size()}) {
    EXPECT_EQ(crc32(s.substr(cut), crc32(s.substr(0, cut))), crc32(s)) << cut;
    EXPECT_EQ(crc32c(s.substr(cut), crc32c(s.substr(0, cut))), crc32c(s)) << cut;
  }
}

TEST(Crc32, MaskedCrc32c) {
  const std::string s = "123456789";
  const uint32_t c = 0xE3069283u;
  EXPECT_EQ(masked_crc32c(s.data(), s.size()), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

}  // namespace
}  // namespace longnet::io
