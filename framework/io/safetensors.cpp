#include "framework/io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "framework/ops/copy.h"

namespace longnet::io {
namespace {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

// Headers above this size are refused (the reference implementation's limit): a damaged length
// must not make the reader allocate gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

constexpr std::pair<DType, const char*> kDtypeNames[] = {
    {DType::F32, "F32"}, {DType::F64, "F64"}, {DType::BF16, "BF16"}, {DType::F16, "F16"},
    {DType::I32, "I32"}, {DType::I64, "I64"}, {DType::U8, "U8"},     {DType::Bool, "BOOL"},
};

DType dtype_from_safetensors(const std::string& path, const std::string& tensor, const std::string& name) {
  for (const auto& [d, n] : kDtypeNames) {
    if (name == n) return d;
  }
  std::string known;
  for (const auto& [d, n] : kDtypeNames) known += (known.empty() ? "" : ", ") + std::string(n);
  LN_FAIL("[safetensors] ", path, ": tensor '", tensor, "' has unsupported dtype '", name, "' (supported: ", known, ")");
}

int64_t file_size(std::ifstream& f) {
  f.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(f.tellg());
  f.seekg(0, std::ios::beg);
  return size;
}

std::ifstream open_for_reading(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LN_CHECK(f.good(), "[safetensors] cannot open '", path, "' for reading");
  return f;
}

// One entry of the header, checked on its own (offsets against the buffer come later).
SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const nlohmann::json& e) {
  const auto bad = [&](const std::string& what) {
    LN_FAIL("[safetensors] ", path, ": tensor '", name, "' ", what, " (entry ", e.dump(), ")");
  };
  if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets")) {
    bad("needs an object with dtype, shape and data_offsets");
  }
  if (!e.at("dtype").is_string()) bad("has a dtype that is not a string");
  SafetensorsEntry out;
  out.name = name;
  out.dtype = dtype_from_safetensors(path, name, e.at("dtype").get<std::string>());
  const nlohmann::json& shape = e.at("shape");
  if (!shape.is_array()) bad("has a shape that is not a list");
  for (const auto& s : shape) {
    if (!s.is_number_unsigned()) bad("has a shape entry that is not a non-negative integer");
    out.shape.push_back(s.get<int64_t>());
  }
  const nlohmann::json& off = e.at("data_offsets");
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
    bad("needs data_offsets [begin, end] of two non-negative integers");
  }
  out.begin = off[0].get<int64_t>();
  out.end = off[1].get<int64_t>();
  if (out.begin > out.end) bad("has data_offsets with begin after end");
  int64_t bytes = static_cast<int64_t>(dtype_size(out.dtype));
  for (int64_t s : out.shape) {
    if (__builtin_mul_overflow(bytes, s, &bytes)) bad("has a shape whose byte size overflows");
  }
  if (bytes != out.end - out.begin) {
    bad("has " + std::to_string(out.end - out.begin) + " bytes of data but its shape " + shape_str(out.shape) + " and dtype need " +
        std::to_string(bytes));
  }
  return out;
}

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  for (const auto& [d, n] : kDtypeNames) {
    if (d == dtype) return n;
  }
  LN_FAIL("[safetensors] dtype ", dtype_name(dtype), " has no safetensors name");
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    LN_CHECK(!name.empty() && name != "__metadata__", "[safetensors] ", path, ": invalid tensor name '", name, "'");
    LN_CHECK(t.defined(), "[safetensors] ", path, ": tensor '", name, "' is undefined");
    const int64_t bytes = t.numel() * static_cast<int64_t>(dtype_size(t.dtype()));
    header[name] = {{"dtype", safetensors_dtype_name(t.dtype())}, {"shape", t.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data buffer starts 8-byte aligned
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  LN_CHECK(f.good(), "[safetensors] cannot open '", path, "' for writing");
  const uint64_t length = text.size();
  f.write(reinterpret_cast<const char*>(&length), 8);
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const auto& [name, t] : tensors) {
    const Tensor host = t.detach().to(Device::cpu()).contiguous();
    f.write(static_cast<const char*>(host.raw_data()), static_cast<std::streamsize>(host.numel() * dtype_size(host.dtype())));
  }
  f.close();
  LN_CHECK(f.good(), "[safetensors] writing '", path, "' failed");
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  std::ifstream f = open_for_reading(path);
  const int64_t size = file_size(f);
  LN_CHECK(size >= 8, "[safetensors] ", path, ": the file has ", size, " bytes, too short for the 8-byte header length");
  uint64_t length = 0;
  f.read(reinterpret_cast<char*>(&length), 8);
  LN_CHECK(length <= static_cast<uint64_t>(size - 8), "[safetensors] ", path, ": header length ", length,
           " reaches beyond the end of the file (", size, " bytes): truncated or not a safetensors file");
  LN_CHECK(length <= kMaxHeaderBytes, "[safetensors] ", path, ": header length ", length, " exceeds the limit of ",
           kMaxHeaderBytes, " bytes");
  std::string text(length, '\0');
  f.read(text.data(), static_cast<std::streamsize>(length));
  LN_CHECK(f.good(), "[safetensors] ", path, ": reading the header failed");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    LN_FAIL("[safetensors] ", path, ": the header is not valid JSON (", e.what(), ")");
  }
  LN_CHECK(header.is_object(), "[safetensors] ", path, ": the header is not a JSON object");
  SafetensorsHeader out;
  out.data_start = 8 + static_cast<int64_t>(length);
  out.data_size = size - out.data_start;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      LN_CHECK(value.is_object(), "[safetensors] ", path, ": __metadata__ is not an object");
      for (const auto& [mk, mv] : value.items()) {
        LN_CHECK(mv.is_string(), "[safetensors] ", path, ": metadata value of '", mk, "' is not a string");
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    out.entries.push_back(parse_entry(path, key, value));
  }
  std::sort(out.entries.begin(), out.entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  // The buffer must be covered exactly: no tensor outside it, no overlap, no unused bytes.
  int64_t expected = 0;
  for (const SafetensorsEntry& e : out.entries) {
    LN_CHECK(e.end <= out.data_size, "[safetensors] ", path, ": tensor '", e.name, "' has data_offsets [", e.begin, ", ",
             e.end, ") outside the data buffer of ", out.data_size, " bytes (truncated file?)");
    LN_CHECK(e.begin >= expected || e.begin == e.end, "[safetensors] ", path, ": tensor '", e.name, "' at [", e.begin, ", ",
             e.end, ") overlaps the tensor before it, which ends at ", expected);
    LN_CHECK(e.begin <= expected, "[safetensors] ", path, ": bytes [", expected, ", ", e.begin,
             ") of the data buffer belong to no tensor (before '", e.name, "')");
    expected = std::max(expected, e.end);
  }
  LN_CHECK(expected == out.data_size, "[safetensors] ", path, ": the data buffer has ", out.data_size - expected,
           " bytes after the last tensor that belong to no tensor");
  return out;
}

std::map<std::string, Tensor> load_safetensors(const std::string& path, Device device,
                                               std::map<std::string, std::string>* metadata) {
  const SafetensorsHeader header = read_safetensors_header(path);
  std::ifstream f = open_for_reading(path);
  std::map<std::string, Tensor> out;
  for (const SafetensorsEntry& e : header.entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype, Device::cpu());
    f.seekg(header.data_start + e.begin);
    f.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(e.end - e.begin));
    LN_CHECK(f.good(), "[safetensors] ", path, ": reading tensor '", e.name, "' failed");
    if (e.dtype == DType::Bool) {
      const auto* b = static_cast<const uint8_t*>(t.raw_data());
      LN_CHECK(std::all_of(b, b + t.numel(), [](uint8_t v) { return v <= 1; }), "[safetensors] ", path, ": tensor '",
               e.name, "' of dtype BOOL holds bytes other than 0 and 1");
    }
    out.emplace(e.name, t.to(device));
  }
  if (metadata != nullptr) *metadata = header.metadata;
  return out;
}

}  // namespace longnet::io
