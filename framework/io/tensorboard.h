#pragma once
// TensorBoard event files, written without TensorFlow: TFRecord framing (length, masked CRC-32C
// of the length, payload, masked CRC-32C of the payload) around hand-encoded `Event` protocol
// buffers carrying scalar summaries. TensorBoard reads them as it reads PyTorch's.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace longnet::io {

/// Appends scalar events to one file `events.out.tfevents.<seconds>.<hostname>` in a log
/// directory. Each add_* call writes one Event and flushes, so a running TensorBoard sees it.
class TensorBoardWriter {
 public:
  /// Creates `log_dir` if needed and a new event file in it, starting with the file_version event.
  explicit TensorBoardWriter(const std::filesystem::path& log_dir);

  /// One scalar at `step`; wall_time in seconds since the epoch (now when not given).
  void add_scalar(const std::string& tag, double value, int64_t step, std::optional<double> wall_time = std::nullopt);
  /// Several scalars of one step in one event.
  void add_scalars(const std::vector<std::pair<std::string, double>>& values, int64_t step,
                   std::optional<double> wall_time = std::nullopt);
  /// The event file's path.
  const std::filesystem::path& path() const { return path_; }

 private:
  void write_record(const std::string& payload);

  std::filesystem::path path_;
  std::ofstream out_;
};

}  // namespace longnet::io
