#include "framework/io/tensorboard.h"

#include <unistd.h>

#include <bit>
#include <chrono>
#include <cstring>

#include "framework/core/error.h"
#include "framework/io/crc32.h"

namespace longnet::io {
namespace {

static_assert(std::endian::native == std::endian::little, "event files are written with little-endian fixed fields");

// Protocol buffer wire types.
constexpr uint32_t kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

void put_key(std::string& out, uint32_t field, uint32_t wire_type) { put_varint(out, (field << 3) | wire_type); }

template <class T>
void put_fixed(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out.append(bytes, sizeof(T));
}

void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event { double wall_time = 1; int64 step = 2; oneof { string file_version = 3; Summary summary = 5; } }
std::string event(double wall_time, int64_t step) {
  std::string e;
  put_key(e, 1, kFixed64);
  put_fixed(e, wall_time);
  put_key(e, 2, kVarint);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::filesystem::path& log_dir) {
  std::filesystem::create_directories(log_dir);
  const double now = now_seconds();
  const std::string base = "events.out.tfevents." + std::to_string(static_cast<int64_t>(now)) + "." + hostname();
  path_ = log_dir / base;
  // Two writers in one second (or a restarted run) must not append to each other's file.
  for (int n = 1; std::filesystem::exists(path_); ++n) {
    path_ = log_dir / (base + "." + std::to_string(::getpid()) + "." + std::to_string(n));
  }
  out_.open(path_, std::ios::binary | std::ios::trunc);
  LN_CHECK(out_.good(), "[tensorboard] cannot create '", path_.string(), "'");
  std::string e = event(now, 0);
  put_bytes(e, 3, "brain.Event:2");
  write_record(e);
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step, std::optional<double> wall_time) {
  add_scalars({{tag, value}}, step, wall_time);
}

void TensorBoardWriter::add_scalars(const std::vector<std::pair<std::string, double>>& values, int64_t step,
                                    std::optional<double> wall_time) {
  // Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; }
  std::string summary;
  for (const auto& [tag, v] : values) {
    std::string value;
    put_bytes(value, 1, tag);
    put_key(value, 2, kFixed32);
    put_fixed(value, static_cast<float>(v));
    put_bytes(summary, 1, value);
  }
  std::string e = event(wall_time.value_or(now_seconds()), step);
  put_bytes(e, 5, summary);
  write_record(e);
}

void TensorBoardWriter::write_record(const std::string& payload) {
  std::string header;
  put_fixed(header, static_cast<uint64_t>(payload.size()));
  std::string record = header;
  put_fixed(record, masked_crc32c(header.data(), header.size()));
  record += payload;
  put_fixed(record, masked_crc32c(payload.data(), payload.size()));
  out_.write(record.data(), static_cast<std::streamsize>(record.size()));
  out_.flush();
  LN_CHECK(out_.good(), "[tensorboard] error writing '", path_.string(), "'");
}

}  // namespace longnet::io
