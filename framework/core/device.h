#pragma once
// Where a tensor's storage lives.
#include <cstdint>
#include <string>

namespace longnet {

/// A device: the host or the i-th CUDA GPU.
struct Device {
  enum class Kind : uint8_t { CPU, CUDA };
  Kind kind = Kind::CPU;
  int index = 0;

  static Device cpu() { return {Kind::CPU, 0}; }
  static Device cuda(int i = 0) { return {Kind::CUDA, i}; }
  bool is_cpu() const { return kind == Kind::CPU; }
  bool is_cuda() const { return kind == Kind::CUDA; }
  bool operator==(const Device& o) const { return kind == o.kind && (is_cpu() || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  /// "cpu" or "cuda:0".
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
};

/// Parses "cpu", "cuda" or "cuda:N"; throws on anything else.
Device device_from_string(const std::string& s);

/// The device factories (zeros, randn, Tensor::empty, ...) use when given none: the CPU unless
/// changed, per thread, so that the same model code runs on either.
Device default_device();
/// Sets this thread's default device; a GPU needs a build with the CUDA backend.
void set_default_device(Device device);

/// Makes `device` the default for its scope and restores the previous default after.
class DefaultDeviceGuard {
 public:
  explicit DefaultDeviceGuard(Device device) : prev_(default_device()) { set_default_device(device); }
  ~DefaultDeviceGuard() { set_default_device(prev_); }
  DefaultDeviceGuard(const DefaultDeviceGuard&) = delete;
  DefaultDeviceGuard& operator=(const DefaultDeviceGuard&) = delete;

 private:
  Device prev_;
};

}  // namespace longnet
