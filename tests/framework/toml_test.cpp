// The TOML subset reader: every value kind, tables and dotted keys, comments and multi-line
// arrays, escapes, writing values back (round trip), and errors that name the line.
#include "framework/io/toml.h"

#include <cmath>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "framework/core/error.h"

namespace longnet::io {
namespace {

// The message of the error parse_toml throws for `text` ("" when it does not throw).
std::string parse_error(const std::string& text) {
  try {
    parse_toml(text, "test.toml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Toml, ScalarsTablesAndComments) {
  const TomlDocument doc = parse_toml(R"(# a run
title = "demo"   # trailing comment
[model]
dim = 256
dropout = 0.1
tie_weights = true
big = 9_223_372_036_854_775_807
neg = -12
exp = 3e-4
plus = +1.5
[optimizer.adam]
name = 'literal \n kept'
"quoted key" = false
)");
  ASSERT_EQ(doc.entries.size(), 10u);
  EXPECT_EQ(doc.find("title")->value.string, "demo");
  EXPECT_EQ(doc.find("model.dim")->value.kind, TomlValue::Kind::Integer);
  EXPECT_EQ(doc.find("model.dim")->value.integer, 256);
  EXPECT_EQ(doc.find("model.dim")->line, 4);
  EXPECT_DOUBLE_EQ(doc.find("model.dropout")->value.number, 0.1);
  EXPECT_TRUE(doc.find("model.tie_weights")->value.boolean);
  EXPECT_EQ(doc.find("model.big")->value.integer, std::numeric_limits<int64_t>::max());
  EXPECT_EQ(doc.find("model.neg")->value.integer, -12);
  EXPECT_EQ(doc.find("model.exp")->value.kind, TomlValue::Kind::Float);
  EXPECT_DOUBLE_EQ(doc.find("model.exp")->value.number, 3e-4);
  EXPECT_DOUBLE_EQ(doc.find("model.plus")->value.number, 1.5);
  EXPECT_EQ(doc.find("optimizer.adam.name")->value.string, "literal \\n kept");
  EXPECT_FALSE(doc.find("optimizer.adam.quoted key")->value.boolean);
  EXPECT_EQ(doc.find("optimizer.adam.quoted key")->line, 13);
  EXPECT_EQ(doc.find("model.missing"), nullptr);
  // File order is kept.
  EXPECT_EQ(doc.entries.front().key, "title");
  EXPECT_EQ(doc.entries.back().key, "optimizer.adam.quoted key");
}

TEST(Toml, DottedKeysAndSpecialFloats) {
  const TomlDocument doc = parse_toml("a.b.c = 1\n[x]\ny.z = inf\nw = -inf\nn = nan\n");
  EXPECT_EQ(doc.find("a.b.c")->value.integer, 1);
  EXPECT_TRUE(std::isinf(doc.find("x.y.z")->value.number) && doc.find("x.y.z")->value.number > 0);
  EXPECT_TRUE(std::isinf(doc.find("x.w")->value.number) && doc.find("x.w")->value.number < 0);
  EXPECT_TRUE(std::isnan(doc.find("x.n")->value.number));
}

TEST(Toml, ArraysOverSeveralLines) {
  const TomlDocument doc = parse_toml(R"([attention]
segments = [
  128,  # first
  256,
  512,  # trailing comma allowed
]
names = ["a", 'b']
mixed = [1, 2.5]
empty = []
)");
  const TomlValue& seg = doc.find("attention.segments")->value;
  ASSERT_EQ(seg.kind, TomlValue::Kind::Array);
  ASSERT_EQ(seg.array.size(), 3u);
  EXPECT_EQ(seg.array[2].integer, 512);
  EXPECT_EQ(doc.find("attention.names")->value.array[1].string, "b");
  // A list with any float is a list of floats.
  const TomlValue& mixed = doc.find("attention.mixed")->value;
  EXPECT_EQ(mixed.array[0].kind, TomlValue::Kind::Float);
  EXPECT_DOUBLE_EQ(mixed.array[0].number, 1.0);
  EXPECT_TRUE(doc.find("attention.empty")->value.array.empty());
  EXPECT_EQ(doc.find("attention.names")->line, 7);
}

TEST(Toml, StringEscapes) {
  const TomlDocument doc = parse_toml(R"(s = "tab\there \"q\" back\\slash \u00e9 \U0001F600")");
  EXPECT_EQ(doc.find("s")->value.string, "tab\there \"q\" back\\slash \xC3\xA9 \xF0\x9F\x98\x80");
}

TEST(Toml, ValuesRoundTripThroughText) {
  const std::vector<TomlValue> values = {
      TomlValue::of_string("quote \" backslash \\ newline \n tab \t ctrl \x01"),
      TomlValue::of_integer(-42),
      TomlValue::of_float(0.1),
      TomlValue::of_float(3e-4),
      TomlValue::of_float(1e300),
      TomlValue::of_float(2.0),
      TomlValue::of_float(-std::numeric_limits<double>::infinity()),
      TomlValue::of_bool(true),
      TomlValue::of_array({TomlValue::of_integer(1), TomlValue::of_integer(2)}),
      TomlValue::of_array({TomlValue::of_string("x"), TomlValue::of_string("y z")}),
  };
  for (const TomlValue& v : values) {
    const std::string text = v.to_toml();
    const TomlValue back = parse_toml_value(text);
    EXPECT_EQ(back.kind, v.kind) << text;
    EXPECT_EQ(back.to_toml(), text);
    if (v.kind == TomlValue::Kind::Float) {
      EXPECT_EQ(back.number, v.number) << text;  // exact
    }
    if (v.kind == TomlValue::Kind::String) {
      EXPECT_EQ(back.string, v.string) << text;
    }
  }
  EXPECT_EQ(TomlValue::of_float(2.0).to_toml(), "2.0");
  EXPECT_EQ(format_toml_key("dim"), "dim");
  EXPECT_EQ(format_toml_key("a b"), "\"a b\"");
}

TEST(Toml, SingleValues) {
  EXPECT_EQ(parse_toml_value("[1, 2, 3]").array.size(), 3u);
  EXPECT_EQ(parse_toml_value("  'x'  # note").string, "x");
  EXPECT_THROW(parse_toml_value("1 2"), Error);
}

TEST(Toml, ErrorsNameTheLine) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"a = 1\nb = \n", "test.toml:2: expected a value"},
      {"a = 1\n\nname = hello\n", "test.toml:3: 'hello' is not a value (strings need quotes"},
      {"[m]\nx = 1\nx = 2\n", "test.toml:3: 'm.x' is defined twice (first on line 2)"},
      {"[m]\n[m]\n", "test.toml:2: 'm' is defined twice"},
      {"m = 1\n[m.x]\n", "test.toml:2: 'm.x' extends 'm', which line 1 set to a value"},
      {"a = \"open\n", "test.toml:1: unterminated string"},
      {"a = [1,\n 2\n", "test.toml:3: unterminated array (opened on line 1)"},
      {"a = [1, \"x\"]\n", "array mixes integer and string"},
      {"a = [[1]]\n", "nested arrays are not supported"},
      {"[[t]]\n", "arrays of tables"},
      {"a = {x = 1}\n", "inline tables are not supported"},
      {"a = 1979-05-27\n", "is not a value"},
      {"a = 01\n", "leading zeros"},
      {"a = 1__0\n", "misplaced '_'"},
      {"a = 1.\n", "decimal point needs digits"},
      {"a = 99999999999999999999\n", "does not fit in 64 bits"},
      {"a = 1 b\n", "test.toml:1: unexpected text after the value: 'b'"},
      {"a = \"\\q\"\n", "unknown escape '\\q'"},
      {"a = \"\"\"x\"\"\"\n", "multi-line strings"},
      {"= 3\n", "expected a key"},
      {"[a\n", "expected ']'"},
      {"a 3\n", "expected '='"},
  };
  for (const Case& c : cases) {
    const std::string msg = parse_error(c.text);
    EXPECT_NE(msg.find(c.message), std::string::npos) << "input: " << c.text << "\nmessage: " << msg;
    EXPECT_EQ(msg.rfind("[toml] ", 0), 0u) << msg;
  }
}

TEST(Toml, MissingFile) {
  try {
    read_toml_file("/nonexistent/run.toml");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open '/nonexistent/run.toml'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace longnet::io
