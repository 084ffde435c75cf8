#pragma once
// A reader for the subset of TOML that run configs use: tables `[a]` and `[a.b]`, `key = value`
// with bare, quoted or dotted keys, values that are strings (basic and literal), integers, floats
// (including inf and nan), booleans, and arrays of those (one element kind per array, several
// lines allowed, trailing comma allowed), and `#` comments. Anything else in TOML (dates, inline
// tables, arrays of tables, multi-line strings) is rejected with its line number rather than
// misread. Errors read "[toml] file:line: message".
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace longnet::io {

/// One value: a scalar, or an array of scalars of one kind.
struct TomlValue {
  enum class Kind : uint8_t { String, Integer, Float, Bool, Array };
  Kind kind = Kind::String;
  std::string string;
  int64_t integer = 0;
  double number = 0.0;
  bool boolean = false;
  std::vector<TomlValue> array;

  static TomlValue of_string(std::string s);
  static TomlValue of_integer(int64_t v);
  static TomlValue of_float(double v);
  static TomlValue of_bool(bool v);
  static TomlValue of_array(std::vector<TomlValue> items);

  /// "string", "integer", "float", "boolean", "array".
  const char* type_name() const;
  /// The value written as TOML (floats round-trip exactly).
  std::string to_toml() const;
};

/// One `key = value` line, its key made absolute ("section.sub.key").
struct TomlEntry {
  std::string key;
  TomlValue value;
  int line = 0;
};

/// A parsed file: its entries in file order.
struct TomlDocument {
  std::string source;  // file name or "<string>", for messages
  std::vector<TomlEntry> entries;

  /// The entry with this absolute key, or null.
  const TomlEntry* find(std::string_view key) const;
};

/// Parses TOML text; `source` names it in error messages.
TomlDocument parse_toml(std::string_view text, const std::string& source = "<string>");
/// Reads and parses a file; throws naming the path when it cannot be read.
TomlDocument read_toml_file(const std::filesystem::path& path);
/// Parses one value literal, as written right of `=` (for example "[1, 2]", "'a'", "3e-4").
TomlValue parse_toml_value(std::string_view text, const std::string& source = "<value>");
/// `s` as a TOML basic string, quoted and escaped.
std::string quote_toml_string(std::string_view s);
/// `key` as written in a TOML file: bare when it only has A-Z a-z 0-9 _ -, else quoted.
std::string format_toml_key(std::string_view key);

}  // namespace longnet::io
