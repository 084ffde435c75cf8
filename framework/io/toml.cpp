#include "framework/io/toml.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <system_error>

#include "framework/core/error.h"

namespace longnet::io {
namespace {

bool is_bare_key_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A cursor over the text that knows its line, for messages.
class Parser {
 public:
  Parser(std::string_view text, const std::string& source) : text_(text), source_(source) {}

  TomlDocument document() {
    TomlDocument doc;
    doc.source = source_;
    std::string table;  // current [table] prefix, "" at top level
    while (true) {
      skip_blank_lines();
      if (at_end()) break;
      if (peek() == '[') {
        table = table_header();
      } else {
        const int line = line_;
        std::vector<std::string> parts = key_path();
        skip_spaces();
        expect('=', "expected '=' after the key");
        skip_spaces();
        TomlValue value = this->value();
        end_of_line();
        std::string key = table;
        for (const std::string& p : parts) key += (key.empty() ? "" : ".") + p;
        define(key, line, /*is_table=*/false);
        doc.entries.push_back({std::move(key), std::move(value), line});
      }
    }
    return doc;
  }

  TomlValue single_value() {
    skip_spaces();
    TomlValue v = value();
    skip_spaces();
    if (!at_end() && peek() == '#') skip_comment();
    if (!at_end()) fail("unexpected text after the value: '", rest_of_line(), "'");
    return v;
  }

 private:
  template <class... Args>
  [[noreturn]] void fail(const Args&... args) const {
    LN_FAIL("[toml] ", source_, ":", line_, ": ", args...);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek(size_t ahead = 0) const { return pos_ + ahead < text_.size() ? text_[pos_ + ahead] : '\0'; }
  char get() {
    const char c = text_[pos_++];
    if (c == '\n') ++line_;
    return c;
  }
  void expect(char c, const char* what) {
    if (at_end() || peek() != c) fail(what, at_end() ? " (end of input)" : "");
    get();
  }
  std::string rest_of_line() const {
    const size_t end = text_.find('\n', pos_);
    return std::string(text_.substr(pos_, end == std::string_view::npos ? std::string_view::npos : end - pos_));
  }

  void skip_spaces() {
    while (!at_end() && (peek() == ' ' || peek() == '\t')) get();
  }
  void skip_comment() {
    while (!at_end() && peek() != '\n') get();
  }
  void skip_blank_lines() {
    while (!at_end()) {
      const char c = peek();
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        get();
      } else if (c == '#') {
        skip_comment();
      } else {
        break;
      }
    }
  }
  // Whitespace, newlines and comments inside an array.
  void skip_array_space() { skip_blank_lines(); }

  void end_of_line() {
    skip_spaces();
    if (!at_end() && peek() == '#') skip_comment();
    if (!at_end() && peek() == '\r') get();
    if (!at_end() && peek() != '\n') fail("unexpected text after the value: '", rest_of_line(), "'");
  }

  // Records that `key` is defined; TOML forbids defining a key twice or using a value as a table.
  void define(const std::string& key, int line, bool is_table) {
    for (size_t dot = key.find('.'); dot != std::string::npos; dot = key.find('.', dot + 1)) {
      auto it = defined_.find(key.substr(0, dot));
      if (it != defined_.end() && !it->second.is_table) {
        fail("'", key, "' extends '", key.substr(0, dot), "', which line ", it->second.line, " set to a value");
      }
      if (it == defined_.end()) defined_[key.substr(0, dot)] = {line, true, false};
    }
    auto [it, inserted] = defined_.try_emplace(key, Defined{line, is_table, is_table});
    if (inserted) return;
    if (is_table && it->second.is_table && !it->second.explicit_table) {
      it->second.explicit_table = true;  // [a.b] after [a.b.c]: allowed once
      return;
    }
    fail("'", key, "' is defined twice (first on line ", it->second.line, ")");
  }

  std::string table_header() {
    const int line = line_;
    get();  // '['
    if (peek() == '[') fail("arrays of tables ([[...]]) are not supported");
    skip_spaces();
    std::vector<std::string> parts = key_path();
    skip_spaces();
    expect(']', "expected ']' to close the table header");
    end_of_line();
    std::string name;
    for (const std::string& p : parts) name += (name.empty() ? "" : ".") + p;
    define(name, line, /*is_table=*/true);
    return name;
  }

  std::vector<std::string> key_path() {
    std::vector<std::string> parts;
    while (true) {
      skip_spaces();
      parts.push_back(key_part());
      skip_spaces();
      if (at_end() || peek() != '.') return parts;
      get();
    }
  }

  std::string key_part() {
    if (peek() == '"') return basic_string();
    if (peek() == '\'') return literal_string();
    std::string key;
    while (!at_end() && is_bare_key_char(peek())) key += get();
    if (key.empty()) fail("expected a key, got '", rest_of_line(), "'");
    return key;
  }

  std::string basic_string() {
    if (text_.substr(pos_, 3) == "\"\"\"") fail("multi-line strings are not supported");
    get();  // '"'
    std::string out;
    while (true) {
      if (at_end() || peek() == '\n') fail("unterminated string");
      const char c = get();
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (at_end()) fail("unterminated string");
      const char e = get();
      switch (e) {
        case 'b': out += '\b'; break;
        case 't': out += '\t'; break;
        case 'n': out += '\n'; break;
        case 'f': out += '\f'; break;
        case 'r': out += '\r'; break;
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case 'u':
        case 'U': out += unicode_escape(e == 'u' ? 4 : 8); break;
        default: fail("unknown escape '\\", e, "' in a string");
      }
    }
  }

  std::string unicode_escape(int digits) {
    uint32_t cp = 0;
    for (int i = 0; i < digits; ++i) {
      const char h = at_end() ? '\0' : get();
      int d = -1;
      if (h >= '0' && h <= '9') d = h - '0';
      if (h >= 'a' && h <= 'f') d = h - 'a' + 10;
      if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
      if (d < 0) fail("\\u and \\U escapes take ", digits, " hex digits");
      cp = cp * 16 + static_cast<uint32_t>(d);
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) fail("escape U+", std::hex, cp, " is not a Unicode scalar value");
    std::string out;
    append_utf8(out, cp);
    return out;
  }

  std::string literal_string() {
    if (text_.substr(pos_, 3) == "'''") fail("multi-line strings are not supported");
    get();  // '\''
    std::string out;
    while (true) {
      if (at_end() || peek() == '\n') fail("unterminated string");
      const char c = get();
      if (c == '\'') return out;
      out += c;
    }
  }

  TomlValue value() {
    if (at_end()) fail("expected a value (end of input)");
    const char c = peek();
    if (c == '"') return TomlValue::of_string(basic_string());
    if (c == '\'') return TomlValue::of_string(literal_string());
    if (c == '[') return array();
    if (c == '{') fail("inline tables are not supported; use a [table] section");
    std::string word;
    while (!at_end() && peek() != ',' && peek() != ']' && peek() != '#' && peek() != '\n' && peek() != '\r' &&
           peek() != ' ' && peek() != '\t') {
      word += get();
    }
    if (word == "true") return TomlValue::of_bool(true);
    if (word == "false") return TomlValue::of_bool(false);
    return number(word);
  }

  TomlValue number(const std::string& word) {
    if (word.empty()) fail("expected a value, got '", rest_of_line(), "'");
    std::string body = word;
    std::string sign;
    if (body[0] == '+' || body[0] == '-') {
      sign = body.substr(0, 1);
      body = body.substr(1);
    }
    if (body == "inf" || body == "nan") {
      const double v = body == "inf" ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
      return TomlValue::of_float(sign == "-" ? -v : v);
    }
    // Underscores may only sit between digits.
    std::string digits;
    for (size_t i = 0; i < body.size(); ++i) {
      if (body[i] == '_') {
        const bool between = i > 0 && i + 1 < body.size() && std::isdigit(static_cast<unsigned char>(body[i - 1])) &&
                             std::isdigit(static_cast<unsigned char>(body[i + 1]));
        if (!between) fail("misplaced '_' in number '", word, "'");
        continue;
      }
      digits += body[i];
    }
    if (digits.empty() || !std::isdigit(static_cast<unsigned char>(digits[0]))) {
      fail("'", word, "' is not a value (strings need quotes: \"", word, "\")");
    }
    if (digits.size() > 1 && digits[0] == '0' && std::isdigit(static_cast<unsigned char>(digits[1]))) {
      fail("leading zeros are not allowed in number '", word, "'");
    }
    const bool is_float = digits.find_first_of(".eE") != std::string::npos;
    const std::string full = sign == "-" ? "-" + digits : digits;
    const char* first = full.data();
    const char* last = full.data() + full.size();
    if (is_float) {
      const size_t dot = digits.find('.');
      if (dot != std::string::npos && (dot + 1 >= digits.size() || !std::isdigit(static_cast<unsigned char>(digits[dot + 1])))) {
        fail("a decimal point needs digits on both sides in '", word, "'");
      }
      double v = 0;
      const auto [ptr, ec] = std::from_chars(first, last, v);
      if (ec != std::errc() || ptr != last) fail("'", word, "' is not a number");
      return TomlValue::of_float(v);
    }
    int64_t v = 0;
    const auto [ptr, ec] = std::from_chars(first, last, v);
    if (ec == std::errc::result_out_of_range) fail("integer '", word, "' does not fit in 64 bits");
    if (ec != std::errc() || ptr != last) fail("'", word, "' is not a value (strings need quotes: \"", word, "\")");
    return TomlValue::of_integer(v);
  }

  TomlValue array() {
    const int opened = line_;
    get();  // '['
    std::vector<TomlValue> items;
    while (true) {
      skip_array_space();
      if (at_end()) fail("unterminated array (opened on line ", opened, ")");
      if (peek() == ']') break;
      if (peek() == '[') fail("nested arrays are not supported");
      TomlValue item = value();
      if (!items.empty()) {
        const bool numeric_mix = (items[0].kind == TomlValue::Kind::Integer && item.kind == TomlValue::Kind::Float) ||
                                 (items[0].kind == TomlValue::Kind::Float && item.kind == TomlValue::Kind::Integer);
        if (item.kind != items[0].kind && !numeric_mix) {
          fail("array mixes ", items[0].type_name(), " and ", item.type_name(), " elements");
        }
      }
      items.push_back(std::move(item));
      skip_array_space();
      if (!at_end() && peek() == ',') {
        get();
        continue;
      }
      if (at_end()) fail("unterminated array (opened on line ", opened, ")");
      if (peek() != ']') fail("expected ',' or ']' in an array");
      break;
    }
    get();  // ']'
    // Integers and floats mixed in one array are read as floats (a list of numbers).
    const bool any_float = std::any_of(items.begin(), items.end(), [](const TomlValue& v) { return v.kind == TomlValue::Kind::Float; });
    if (any_float) {
      for (TomlValue& v : items) {
        if (v.kind == TomlValue::Kind::Integer) v = TomlValue::of_float(static_cast<double>(v.integer));
      }
    }
    return TomlValue::of_array(std::move(items));
  }

  struct Defined {
    int line;
    bool is_table;
    bool explicit_table;
  };

  std::string_view text_;
  const std::string& source_;
  size_t pos_ = 0;
  int line_ = 1;
  std::map<std::string, Defined> defined_;
};

std::string format_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, ptr);
  // TOML needs a '.' or an exponent to read the value back as a float.
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  // to_chars writes "1e-05"; TOML accepts it as is.
  return s;
}

}  // namespace

TomlValue TomlValue::of_string(std::string s) {
  TomlValue v;
  v.kind = Kind::String;
  v.string = std::move(s);
  return v;
}

TomlValue TomlValue::of_integer(int64_t i) {
  TomlValue v;
  v.kind = Kind::Integer;
  v.integer = i;
  return v;
}

TomlValue TomlValue::of_float(double d) {
  TomlValue v;
  v.kind = Kind::Float;
  v.number = d;
  return v;
}

TomlValue TomlValue::of_bool(bool b) {
  TomlValue v;
  v.kind = Kind::Bool;
  v.boolean = b;
  return v;
}

TomlValue TomlValue::of_array(std::vector<TomlValue> items) {
  TomlValue v;
  v.kind = Kind::Array;
  v.array = std::move(items);
  return v;
}

const char* TomlValue::type_name() const {
  switch (kind) {
    case Kind::String: return "string";
    case Kind::Integer: return "integer";
    case Kind::Float: return "float";
    case Kind::Bool: return "boolean";
    case Kind::Array: return "array";
  }
  return "?";
}

std::string TomlValue::to_toml() const {
  switch (kind) {
    case Kind::String: return quote_toml_string(string);
    case Kind::Integer: return std::to_string(integer);
    case Kind::Float: return format_float(number);
    case Kind::Bool: return boolean ? "true" : "false";
    case Kind::Array: {
      std::string out = "[";
      for (size_t i = 0; i < array.size(); ++i) out += (i ? ", " : "") + array[i].to_toml();
      return out + "]";
    }
  }
  return "";
}

const TomlEntry* TomlDocument::find(std::string_view key) const {
  for (const TomlEntry& e : entries) {
    if (e.key == key) return &e;
  }
  return nullptr;
}

TomlDocument parse_toml(std::string_view text, const std::string& source) { return Parser(text, source).document(); }

TomlDocument read_toml_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  LN_CHECK(in.good(), "[toml] cannot open '", path.string(), "'");
  std::ostringstream text;
  text << in.rdbuf();
  LN_CHECK(!in.bad(), "[toml] error reading '", path.string(), "'");
  return parse_toml(text.str(), path.string());
}

TomlValue parse_toml_value(std::string_view text, const std::string& source) {
  return Parser(text, source).single_value();
}

std::string quote_toml_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string format_toml_key(std::string_view key) {
  const bool bare = !key.empty() && std::all_of(key.begin(), key.end(), is_bare_key_char);
  return bare ? std::string(key) : quote_toml_string(key);
}

}  // namespace longnet::io
