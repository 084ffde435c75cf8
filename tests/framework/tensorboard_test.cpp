// TensorBoard event files decoded by an independent minimal reader written here: TFRecord framing
// with both masked CRC-32C values checked (bitwise CRC), then the Event and Summary protocol
// buffers parsed field by field (varints, fixed64, fixed32, length-delimited).
#include "framework/io/tensorboard.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace longnet::io {
namespace {

namespace fs = std::filesystem;

uint32_t crc32c_bitwise(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

uint32_t masked(const std::string& s) {
  const uint32_t c = crc32c_bitwise(s);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

// A little-endian unsigned integer of sizeof(T) bytes at `pos`.
template <class T>
T read_le(const std::string& s, size_t pos) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(s.at(pos + i))) << (8 * i);
  return static_cast<T>(v);
}

// The payloads of a TFRecord file; fails the test on a bad checksum.
std::vector<std::string> read_records(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < data.size()) {
    const uint64_t len = read_le<uint64_t>(data, pos);
    EXPECT_EQ(read_le<uint32_t>(data, pos + 8), masked(data.substr(pos, 8))) << "length crc at " << pos;
    const std::string payload = data.substr(pos + 12, len);
    EXPECT_EQ(read_le<uint32_t>(data, pos + 12 + len), masked(payload)) << "payload crc at " << pos;
    out.push_back(payload);
    pos += 12 + len + 4;
  }
  EXPECT_EQ(pos, data.size());
  return out;
}

// One protocol buffer field.
struct Field {
  uint32_t number = 0, wire = 0;
  uint64_t varint = 0;  // varint, fixed64 and fixed32 values (raw bits)
  std::string bytes;    // length-delimited contents
};

uint64_t varint(const std::string& s, size_t& pos) {
  uint64_t v = 0;
  for (int shift = 0;; shift += 7) {
    const auto b = static_cast<unsigned char>(s.at(pos++));
    v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
  }
}

std::vector<Field> fields(const std::string& msg) {
  std::vector<Field> out;
  size_t pos = 0;
  while (pos < msg.size()) {
    const uint64_t key = varint(msg, pos);
    Field f;
    f.number = static_cast<uint32_t>(key >> 3);
    f.wire = static_cast<uint32_t>(key & 7);
    if (f.wire == 0) {
      f.varint = varint(msg, pos);
    } else if (f.wire == 1) {
      f.varint = read_le<uint64_t>(msg, pos), pos += 8;
    } else if (f.wire == 5) {
      f.varint = read_le<uint32_t>(msg, pos), pos += 4;
    } else if (f.wire == 2) {
      const uint64_t n = varint(msg, pos);
      f.bytes = msg.substr(pos, n), pos += n;
    } else {
      ADD_FAILURE() << "unexpected wire type " << f.wire;
      break;
    }
    out.push_back(f);
  }
  return out;
}

struct Scalar {
  std::string tag;
  float value;
};

struct Event {
  double wall_time = 0;
  int64_t step = -1;
  std::string file_version;
  std::vector<Scalar> scalars;
};

Event decode_event(const std::string& payload) {
  Event e;
  for (const Field& f : fields(payload)) {
    if (f.number == 1 && f.wire == 1) {
      std::memcpy(&e.wall_time, &f.varint, 8);
    } else if (f.number == 2 && f.wire == 0) {
      e.step = static_cast<int64_t>(f.varint);
    } else if (f.number == 3 && f.wire == 2) {
      e.file_version = f.bytes;
    } else if (f.number == 5 && f.wire == 2) {
      for (const Field& v : fields(f.bytes)) {
        EXPECT_EQ(v.number, 1u);
        Scalar s{};
        for (const Field& x : fields(v.bytes)) {
          if (x.number == 1 && x.wire == 2) s.tag = x.bytes;
          if (x.number == 2 && x.wire == 5) {
            const auto bits = static_cast<uint32_t>(x.varint);
            std::memcpy(&s.value, &bits, 4);
          }
        }
        e.scalars.push_back(s);
      }
    } else {
      ADD_FAILURE() << "unexpected Event field " << f.number;
    }
  }
  return e;
}

TEST(TensorBoard, EventFileDecodesWithAnIndependentReader) {
  const fs::path dir = fs::temp_directory_path() / ("longnet-tb-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::path file;
  {
    TensorBoardWriter w(dir / "tensorboard");
    file = w.path();
    w.add_scalar("train/loss", 2.5, 10, 1700000000.25);
    w.add_scalars({{"train/lr", 3e-4}, {"train/grad_norm", 0.75}}, 20, 1700000001.5);
    w.add_scalar("valid/loss", -1.0 / 3.0, 300000000000LL);  // a step beyond 32 bits, wall time now
    // Records are flushed as they are written: a reader sees them while the writer is open.
    EXPECT_EQ(read_records(file).size(), 4u);
  }
  const std::string name = file.filename().string();
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;
  EXPECT_EQ(file.parent_path(), dir / "tensorboard");

  const std::vector<std::string> records = read_records(file);
  ASSERT_EQ(records.size(), 4u);
  const Event first = decode_event(records[0]);
  EXPECT_EQ(first.file_version, "brain.Event:2");
  EXPECT_TRUE(first.scalars.empty());
  EXPECT_GT(first.wall_time, 1.6e9);

  const Event a = decode_event(records[1]);
  EXPECT_EQ(a.step, 10);
  EXPECT_EQ(a.wall_time, 1700000000.25);
  ASSERT_EQ(a.scalars.size(), 1u);
  EXPECT_EQ(a.scalars[0].tag, "train/loss");
  EXPECT_EQ(a.scalars[0].value, 2.5f);

  const Event b = decode_event(records[2]);
  EXPECT_EQ(b.step, 20);
  ASSERT_EQ(b.scalars.size(), 2u);
  EXPECT_EQ(b.scalars[0].tag, "train/lr");
  EXPECT_EQ(b.scalars[0].value, 3e-4f);
  EXPECT_EQ(b.scalars[1].tag, "train/grad_norm");
  EXPECT_EQ(b.scalars[1].value, 0.75f);

  const Event c = decode_event(records[3]);
  EXPECT_EQ(c.step, 300000000000LL);
  EXPECT_EQ(c.scalars[0].value, static_cast<float>(-1.0 / 3.0));
  EXPECT_NEAR(c.wall_time, first.wall_time, 60.0);

  // A second writer in the same directory gets its own file.
  TensorBoardWriter again(dir / "tensorboard");
  EXPECT_NE(again.path(), file);
  EXPECT_EQ(read_records(file).size(), 4u);
  fs::remove_all(dir);
}

// TensorBoard's own reader (where Python has it: the GPU machines) reads what we write, with the
// scalars, through tools/scripts/check_tensorboard.py.
TEST(TensorBoard, TensorBoardsOwnReaderReadsTheScalars) {
  if (std::system("python3 -c 'import tensorboard' > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "Python's tensorboard package is not installed: tools/scripts/check_tensorboard.py not run";
  }
  const fs::path dir = fs::temp_directory_path() / ("longnet-tb-py-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::path file;
  {
    TensorBoardWriter w(dir);
    file = w.path();
    for (int64_t step = 1; step <= 5; ++step) {
      w.add_scalars({{"train/loss", 4.0 / static_cast<double>(step)}, {"train/lr", 1e-3}}, step);
    }
  }
  const fs::path script = fs::path(__FILE__).parent_path().parent_path().parent_path() / "tools/scripts/check_tensorboard.py";
  const std::string cmd = "python3 " + script.string() + " " + file.string() +
                          " --expect-tag train/loss --expect-tag train/lr --min-points 5";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  // A damaged record must be reported, not read past quietly.
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-6, std::ios::end);
    f.put('\x5a');
  }
  EXPECT_NE(std::system((cmd + " > /dev/null 2>&1").c_str()), 0) << "a corrupted file passed";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace longnet::io
