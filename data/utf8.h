#pragma once
// UTF-8 validation with the position of the first bad byte, for error messages that point at it.
#include <cstddef>
#include <string_view>

namespace longnet::data {

/// Returned by first_invalid_utf8 when the text is valid.
inline constexpr size_t kValidUtf8 = static_cast<size_t>(-1);

/// Byte offset of the first byte that does not start a well-formed UTF-8 sequence (RFC 3629: no
/// overlong forms, no surrogates, nothing above U+10FFFF, no truncated sequence), or kValidUtf8.
size_t first_invalid_utf8(std::string_view text);

/// Length of the longest prefix of `text` of at most `max_bytes` bytes that does not cut a
/// multi-byte character (text is assumed valid UTF-8).
size_t utf8_prefix_length(std::string_view text, size_t max_bytes);

}  // namespace longnet::data
