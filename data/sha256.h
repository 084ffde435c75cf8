#pragma once
// SHA-256 (FIPS 180-4), used to identify tokenizer models and to checksum stored tokens. Python's
// hashlib computes the same digests, so tools outside the program can check them.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace longnet::data {

/// Incremental SHA-256: update() any number of times, then hex_digest() once.
class Sha256 {
 public:
  Sha256();
  /// Adds bytes to the message.
  void update(const void* data, size_t bytes);
  void update(std::string_view bytes) { update(bytes.data(), bytes.size()); }
  /// The 64 lowercase hex digits of the digest; the object must not be updated afterwards.
  std::string hex_digest();

 private:
  void compress(const uint8_t* block);

  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buffer_{};
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // message bytes so far
};

/// SHA-256 of `bytes` as 64 lowercase hex digits.
std::string sha256_hex(std::string_view bytes);

}  // namespace longnet::data
