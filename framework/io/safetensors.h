#pragma once
// safetensors files (the Hugging Face format): an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype ("F32", "BF16", "I64", ...), shape and data_offsets [begin, end) into
// the data buffer that follows, plus string metadata under "__metadata__" ({"format": "pt"} for
// PyTorch-style names). Readers validate everything before trusting it: a truncated or damaged
// file is an error naming the file and the problem, never a crash or a silently wrong tensor.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet::io {

/// One tensor of a safetensors header. Offsets are relative to the start of the data buffer.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  int64_t begin = 0, end = 0;
};

/// A validated header: entries sorted by offset, the metadata, and where the data buffer starts.
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;
  int64_t data_start = 0;  // 8 + header length
  int64_t data_size = 0;
};

/// The safetensors dtype name of a DType ("F32", "F64", "BF16", "F16", "I32", "I64", "U8", "BOOL").
const char* safetensors_dtype_name(DType dtype);

/// Writes `tensors` (any device, any layout; copied to the host) to `path`, sorted by name, the
/// header padded to a multiple of 8 bytes. Names must be non-empty and not "__metadata__".
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

/// Reads and validates the header of `path` (the data is not read). Errors name the file: too short
/// for a header length, header length beyond the file, header that is not JSON or not an object,
/// an unknown dtype, a malformed entry, offsets outside the data or not matching the shape, offsets
/// that overlap or leave bytes of the buffer unused.
SafetensorsHeader read_safetensors_header(const std::string& path);

/// Reads every tensor of `path` onto `device` (contiguous, the file's dtypes); the metadata goes
/// to `metadata` when given.
std::map<std::string, Tensor> load_safetensors(const std::string& path, Device device = Device::cpu(),
                                               std::map<std::string, std::string>* metadata = nullptr);

}  // namespace longnet::io
