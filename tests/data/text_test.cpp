// UTF-8 validation, SHA-256, stateless randomness and the permutation.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "data/random.h"
#include "data/sha256.h"
#include "data/utf8.h"
#include "framework/core/error.h"

namespace longnet::data {
namespace {

TEST(Utf8, AcceptsWellFormedText) {
  EXPECT_EQ(first_invalid_utf8(""), kValidUtf8);
  EXPECT_EQ(first_invalid_utf8("plain ascii\n"), kValidUtf8);
  EXPECT_EQ(first_invalid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF"), kValidUtf8);
}

TEST(Utf8, ReportsTheFirstBadByte) {
  EXPECT_EQ(first_invalid_utf8("ab\x80" "cd"), 2u);           // stray continuation byte
  EXPECT_EQ(first_invalid_utf8("abc\xC3"), 3u);              // truncated at the end
  EXPECT_EQ(first_invalid_utf8("x\xC0\xAF"), 1u);            // overlong '/'
  EXPECT_EQ(first_invalid_utf8("xy\xE0\x80\xAF"), 2u);       // overlong three-byte form
  EXPECT_EQ(first_invalid_utf8("\xED\xA0\x80"), 0u);         // UTF-16 surrogate
  EXPECT_EQ(first_invalid_utf8("ok \xF4\x90\x80\x80"), 3u);  // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("\xC3\xA9\xE2\x82" "A"), 2u); // bad third byte
  EXPECT_EQ(first_invalid_utf8("\xFF"), 0u);
}

TEST(Utf8, PrefixNeverCutsACharacter) {
  const std::string s = "a\xC3\xA9\xE2\x82\xAC";  // a, e-acute (2 bytes), euro (3 bytes)
  EXPECT_EQ(utf8_prefix_length(s, 1), 1u);
  EXPECT_EQ(utf8_prefix_length(s, 2), 1u);
  EXPECT_EQ(utf8_prefix_length(s, 3), 3u);
  EXPECT_EQ(utf8_prefix_length(s, 5), 3u);
  EXPECT_EQ(utf8_prefix_length(s, 6), 6u);
  EXPECT_EQ(utf8_prefix_length(s, 100), 6u);
}

TEST(Sha256, MatchesPublishedVectors) {
  // FIPS 180-4 examples.
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 h;
  const std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.update(chunk);
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShotAcrossBlockEdges) {
  std::string msg;
  for (int i = 0; i < 300; ++i) msg.push_back(static_cast<char>(i * 7 + 3));
  for (size_t split : {0u, 1u, 55u, 56u, 63u, 64u, 65u, 128u, 299u}) {
    Sha256 h;
    h.update(msg.substr(0, split));
    h.update(msg.substr(split));
    EXPECT_EQ(h.hex_digest(), sha256_hex(msg)) << "split at " << split;
  }
}

TEST(Random, IsAPureFunctionOfItsArguments) {
  EXPECT_EQ(random_bits(1, RandomStream::kWindow, 5, 6), random_bits(1, RandomStream::kWindow, 5, 6));
  EXPECT_NE(random_bits(1, RandomStream::kWindow, 5, 6), random_bits(2, RandomStream::kWindow, 5, 6));
  EXPECT_NE(random_bits(1, RandomStream::kWindow, 5, 6), random_bits(1, RandomStream::kSplit, 5, 6));
  EXPECT_NE(random_bits(1, RandomStream::kWindow, 5, 6), random_bits(1, RandomStream::kWindow, 6, 6));
  // Uniformity: 20,000 draws below 10 land within a few percent of 2,000 per value.
  int counts[10] = {};
  for (uint64_t i = 0; i < 20000; ++i) ++counts[random_below(10, 3, RandomStream::kWindow, i)];
  for (int c : counts) EXPECT_NEAR(c, 2000, 200);
  double sum = 0;
  for (uint64_t i = 0; i < 10000; ++i) sum += random_unit(9, RandomStream::kPasskey, i);
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
}

TEST(Permutation, IsABijectionForAnySize) {
  for (uint64_t n : {1u, 2u, 3u, 5u, 16u, 17u, 1000u, 4097u}) {
    Permutation p(n, 42, 0);
    std::set<uint64_t> seen;
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t j = p(i);
      ASSERT_LT(j, n);
      seen.insert(j);
    }
    EXPECT_EQ(seen.size(), n) << "n = " << n;
  }
}

TEST(Permutation, DependsOnSeedAndRound) {
  const uint64_t n = 1000;
  Permutation a(n, 1, 0), b(n, 1, 0), c(n, 2, 0), d(n, 1, 1);
  int same_seed = 0, other_seed = 0, other_round = 0, fixed_points = 0;
  for (uint64_t i = 0; i < n; ++i) {
    same_seed += a(i) == b(i);
    other_seed += a(i) == c(i);
    other_round += a(i) == d(i);
    fixed_points += a(i) == i;
  }
  EXPECT_EQ(same_seed, 1000);
  // A random permutation agrees with another on about one position.
  EXPECT_LT(other_seed, 10);
  EXPECT_LT(other_round, 10);
  EXPECT_LT(fixed_points, 10);
  EXPECT_THROW(Permutation(0, 1, 0), Error);
  EXPECT_THROW(a(n), Error);
}

}  // namespace
}  // namespace longnet::data
