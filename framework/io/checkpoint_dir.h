#pragma once
// Atomic checkpoint directories in a run directory. A checkpoint is written into
// `step-N.tmp-<pid>/`, its files and the directory are fsynced, a manifest (size and CRC-32 of
// every file) is written last, and the directory is renamed to `step-N/`. A crash at any point
// leaves either the previous checkpoints untouched beside a temporary directory, or a complete
// new one; readers only consider `step-N/` directories whose manifest checks out.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace longnet::io {

/// A `step-N/` directory of a run.
struct CheckpointInfo {
  int64_t step = 0;
  std::filesystem::path path;
};

/// Writes one checkpoint. Files are written into dir() (with write_file, or by any writer given
/// file(name)); commit() publishes them. A writer destroyed without commit removes its files.
class CheckpointWriter {
 public:
  /// Creates `run_dir/step-<step>.tmp-<pid>/` (and run_dir if needed).
  CheckpointWriter(const std::filesystem::path& run_dir, int64_t step);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  /// The temporary directory the files go into.
  const std::filesystem::path& dir() const { return tmp_dir_; }
  /// dir() / name, for writers that open the file themselves; name may contain subdirectories.
  std::filesystem::path file(const std::string& name) const;
  /// Writes `bytes` to dir() / name (creating subdirectories) and fsyncs it.
  void write_file(const std::string& name, std::string_view bytes);
  /// Checksums and fsyncs every file, writes manifest.json, fsyncs, renames the directory to
  /// `step-N/` (replacing an existing checkpoint of the same step) and fsyncs the run directory.
  /// Returns the final path.
  std::filesystem::path commit();

 private:
  std::filesystem::path run_dir_;
  std::filesystem::path tmp_dir_;
  int64_t step_;
  bool committed_ = false;
};

/// How much of a checkpoint verify_checkpoint reads.
enum class Verify : uint8_t {
  Sizes,     // the manifest and every file's size (no file contents read)
  Checksums  // also every file's CRC-32
};

/// The name of the manifest every valid checkpoint holds.
inline constexpr const char* kCheckpointManifest = "manifest.json";

/// Every `step-N/` directory of a run, oldest first, valid or not (temporary ones excluded).
std::vector<CheckpointInfo> list_checkpoints(const std::filesystem::path& run_dir);
/// True when `dir` has a complete manifest whose files all exist with the recorded sizes (and
/// checksums); otherwise false, with the reason in *problem when given.
bool verify_checkpoint(const std::filesystem::path& dir, Verify level = Verify::Checksums, std::string* problem = nullptr);
/// The newest checkpoint of the run that verifies, or none.
std::optional<CheckpointInfo> newest_valid(const std::filesystem::path& run_dir, Verify level = Verify::Checksums);
/// Keeps the newest `keep_last` valid checkpoints (sizes checked) and removes every `step-N/`
/// older than the oldest kept, and temporary directories of processes no longer running on this
/// host. keep_last <= 0 keeps every checkpoint (temporaries are still cleaned). Returns what it
/// removed.
std::vector<std::filesystem::path> prune_checkpoints(const std::filesystem::path& run_dir, int64_t keep_last);

/// The whole contents of a file; throws naming the path.
std::string read_file_bytes(const std::filesystem::path& path);

}  // namespace longnet::io
