#include "data/rest_titles.h"

#include <string_view>

namespace longnet::data {
namespace {

std::string_view trim_right(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string_view trim(std::string_view s) {
  s = trim_right(s);
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

bool is_blank(std::string_view s) { return trim(s).empty(); }

// Code points in valid UTF-8 (continuation bytes are not counted).
size_t width(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// A line of one repeated punctuation character, at least three long: the adornment character,
// or 0.
char adornment(std::string_view line) {
  static constexpr std::string_view kChars = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  line = trim_right(line);
  if (line.size() < 3 || kChars.find(line[0]) == std::string_view::npos) return 0;
  for (char c : line) {
    if (c != line[0]) return 0;
  }
  return line[0];
}

}  // namespace

TitledText split_rest_titles(const std::string& text) {
  std::vector<std::string_view> lines;  // each with its '\n' (the last may lack one)
  for (size_t pos = 0; pos < text.size();) {
    const size_t nl = text.find('\n', pos);
    const size_t end = nl == std::string::npos ? text.size() : nl + 1;
    lines.emplace_back(text.data() + pos, end - pos);
    pos = end;
  }
  auto content = [&](size_t i) {
    std::string_view l = lines[i];
    if (!l.empty() && l.back() == '\n') l.remove_suffix(1);
    return l;
  };
  TitledText out;
  size_t i = 0;
  while (i < lines.size()) {
    const bool after_blank = i == 0 || is_blank(content(i - 1));
    // Over- and underlined: adornment, text (may be inset), the same adornment.
    if (after_blank && i + 2 < lines.size()) {
      const char c = adornment(content(i));
      const std::string_view title = trim(content(i + 1));
      if (c && !title.empty() && adornment(content(i + 2)) == c &&
          trim_right(content(i + 2)).size() == trim_right(content(i)).size() &&
          trim_right(content(i)).size() >= width(title)) {
        out.titles.emplace_back(title);
        i += 3;
        continue;
      }
    }
    // Underlined: unindented text, then an adornment at least as wide.
    if (after_blank && i + 1 < lines.size()) {
      const std::string_view line = trim_right(content(i));
      const char c = adornment(content(i + 1));
      if (c && !line.empty() && line.front() != ' ' && line.front() != '\t' && !adornment(line) &&
          trim_right(content(i + 1)).size() >= width(line)) {
        out.titles.emplace_back(line);
        i += 2;
        continue;
      }
    }
    out.body.append(lines[i]);
    ++i;
  }
  return out;
}

}  // namespace longnet::data
