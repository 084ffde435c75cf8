#include "framework/io/checkpoint_dir.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "framework/core/error.h"
#include "framework/io/crc32.h"

namespace longnet::io {
namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "longnet-checkpoint";
constexpr int kVersion = 1;

// A file descriptor closed on scope exit.
class Fd {
 public:
  Fd(const fs::path& path, int flags, mode_t mode = 0644) : fd_(::open(path.c_str(), flags | O_CLOEXEC, mode)) {
    LN_CHECK(fd_ >= 0, "[checkpoint] cannot open '", path.string(), "': ", std::strerror(errno));
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

void fsync_path(const fs::path& path, bool directory) {
  Fd fd(path, directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  LN_CHECK(::fsync(fd.get()) == 0, "[checkpoint] fsync of '", path.string(), "' failed: ", std::strerror(errno));
}

void write_all(const fs::path& path, std::string_view bytes) {
  Fd fd(path, O_WRONLY | O_CREAT | O_TRUNC);
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd.get(), bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    LN_CHECK(n > 0, "[checkpoint] write to '", path.string(), "' failed: ", std::strerror(errno));
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  LN_CHECK(::fsync(fd.get()) == 0, "[checkpoint] fsync of '", path.string(), "' failed: ", std::strerror(errno));
}

// Size and CRC-32 of a file, read in 1 MiB pieces.
std::pair<uint64_t, uint32_t> size_and_crc(const fs::path& path) {
  Fd fd(path, O_RDONLY);
  std::vector<char> buf(1 << 20);
  uint64_t size = 0;
  uint32_t crc = 0;
  while (true) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    LN_CHECK(n >= 0, "[checkpoint] read of '", path.string(), "' failed: ", std::strerror(errno));
    if (n == 0) break;
    crc = crc32(buf.data(), static_cast<size_t>(n), crc);
    size += static_cast<uint64_t>(n);
  }
  return {size, crc};
}

// "step-<N>" -> N; "step-<N><suffix>" -> N and the suffix when `suffix` is non-null.
std::optional<int64_t> parse_step_name(const std::string& name, std::string* suffix = nullptr) {
  if (name.rfind("step-", 0) != 0) return std::nullopt;
  const char* first = name.data() + 5;
  const char* last = name.data() + name.size();
  int64_t step = 0;
  const auto [ptr, ec] = std::from_chars(first, last, step);
  if (ec != std::errc() || ptr == first || step < 0) return std::nullopt;
  if (suffix != nullptr) {
    *suffix = std::string(ptr, last);
  } else if (ptr != last) {
    return std::nullopt;
  }
  return step;
}

std::string step_name(int64_t step) { return "step-" + std::to_string(step); }

bool process_alive(long pid) {
  if (pid <= 0) return false;
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// Files under `dir`, as paths relative to it, sorted.
std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), dir).generic_string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

CheckpointWriter::CheckpointWriter(const fs::path& run_dir, int64_t step) : run_dir_(run_dir), step_(step) {
  LN_CHECK(step >= 0, "[checkpoint] step must be >= 0, got ", step);
  fs::create_directories(run_dir_);
  tmp_dir_ = run_dir_ / (step_name(step) + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp_dir_);  // a leftover of an earlier process with this pid
  fs::create_directory(tmp_dir_);
}

CheckpointWriter::~CheckpointWriter() {
  if (committed_) return;
  std::error_code ec;  // best effort: a destructor must not throw
  fs::remove_all(tmp_dir_, ec);
}

fs::path CheckpointWriter::file(const std::string& name) const {
  const fs::path rel(name);
  LN_CHECK(!name.empty() && rel.is_relative() && std::none_of(rel.begin(), rel.end(), [](const fs::path& p) { return p == ".."; }),
           "[checkpoint] file name '", name, "' must be a relative path inside the checkpoint");
  LN_CHECK(name != kCheckpointManifest, "[checkpoint] '", name, "' is reserved for the manifest");
  return tmp_dir_ / rel;
}

void CheckpointWriter::write_file(const std::string& name, std::string_view bytes) {
  LN_CHECK(!committed_, "[checkpoint] write_file after commit");
  const fs::path path = file(name);
  fs::create_directories(path.parent_path());
  write_all(path, bytes);
}

fs::path CheckpointWriter::commit() {
  LN_CHECK(!committed_, "[checkpoint] commit called twice");
  LN_CHECK(!fs::exists(tmp_dir_ / kCheckpointManifest), "[checkpoint] '", kCheckpointManifest,
           "' is reserved for the manifest");
  nlohmann::json files = nlohmann::json::array();
  for (const std::string& rel : files_under(tmp_dir_)) {
    const auto [size, crc] = size_and_crc(tmp_dir_ / rel);
    fsync_path(tmp_dir_ / rel, false);
    files.push_back({{"path", rel}, {"size", size}, {"crc32", crc}});
  }
  // Subdirectories first, so that every entry is durable before the manifest is.
  for (const auto& e : fs::recursive_directory_iterator(tmp_dir_)) {
    if (e.is_directory()) fsync_path(e.path(), true);
  }
  const nlohmann::json manifest = {{"format", kFormat}, {"version", kVersion}, {"step", step_}, {"files", files}};
  write_all(tmp_dir_ / kCheckpointManifest, manifest.dump(2) + "\n");
  fsync_path(tmp_dir_, true);

  const fs::path final_dir = run_dir_ / step_name(step_);
  if (fs::exists(final_dir)) {
    // rename() cannot replace a non-empty directory: move the old one aside first.
    const fs::path old = run_dir_ / (step_name(step_) + ".old-" + std::to_string(::getpid()));
    fs::remove_all(old);
    fs::rename(final_dir, old);
    fs::rename(tmp_dir_, final_dir);
    fsync_path(run_dir_, true);
    fs::remove_all(old);
  } else {
    fs::rename(tmp_dir_, final_dir);
  }
  fsync_path(run_dir_, true);
  committed_ = true;
  return final_dir;
}

std::vector<CheckpointInfo> list_checkpoints(const fs::path& run_dir) {
  std::vector<CheckpointInfo> out;
  if (!fs::is_directory(run_dir)) return out;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    if (!e.is_directory()) continue;
    if (const auto step = parse_step_name(e.path().filename().string())) out.push_back({*step, e.path()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

bool verify_checkpoint(const fs::path& dir, Verify level, std::string* problem) {
  auto bad = [&](const auto&... why) {
    if (problem != nullptr) *problem = detail::concat(why...);
    return false;
  };
  const fs::path manifest_path = dir / kCheckpointManifest;
  if (!fs::is_regular_file(manifest_path)) return bad("no ", kCheckpointManifest);
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(read_file_bytes(manifest_path));
    if (m.at("format") != kFormat) return bad("not a longnet checkpoint manifest");
    if (m.at("version").get<int>() > kVersion) return bad("manifest version ", m.at("version").dump(), " is newer than this build's");
    if (const auto step = parse_step_name(dir.filename().string()); step && *step != m.at("step").get<int64_t>()) {
      return bad("the manifest is for step ", m.at("step").dump(), ", the directory for step ", *step);
    }
    for (const auto& f : m.at("files")) {
      const fs::path path = dir / f.at("path").get<std::string>();
      const uint64_t size = f.at("size").get<uint64_t>();
      std::error_code ec;
      const uintmax_t actual = fs::file_size(path, ec);
      if (ec) return bad("missing file '", f.at("path").get<std::string>(), "'");
      if (actual != size) return bad("'", f.at("path").get<std::string>(), "' has ", actual, " bytes, the manifest says ", size);
      if (level == Verify::Checksums && size_and_crc(path).second != f.at("crc32").get<uint32_t>()) {
        return bad("'", f.at("path").get<std::string>(), "' does not match its checksum");
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return bad("unreadable manifest: ", e.what());
  } catch (const Error& e) {
    return bad(e.what());
  }
  return true;
}

std::optional<CheckpointInfo> newest_valid(const fs::path& run_dir, Verify level) {
  const std::vector<CheckpointInfo> all = list_checkpoints(run_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    if (verify_checkpoint(it->path, level)) return *it;
  }
  return std::nullopt;
}

std::vector<fs::path> prune_checkpoints(const fs::path& run_dir, int64_t keep_last) {
  std::vector<fs::path> removed;
  if (!fs::is_directory(run_dir)) return removed;
  for (const auto& e : fs::directory_iterator(run_dir)) {
    std::string suffix;
    if (!e.is_directory() || !parse_step_name(e.path().filename().string(), &suffix)) continue;
    for (const char* tag : {".tmp-", ".old-"}) {
      if (suffix.rfind(tag, 0) != 0) continue;
      long pid = 0;
      const std::string digits = suffix.substr(std::strlen(tag));
      const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
      const bool parsed = ec == std::errc() && ptr == digits.data() + digits.size();
      if (parsed && pid != ::getpid() && !process_alive(pid)) removed.push_back(e.path());
    }
  }
  if (keep_last > 0) {
    const std::vector<CheckpointInfo> all = list_checkpoints(run_dir);
    int64_t kept = 0;
    std::optional<int64_t> oldest_kept;
    for (auto it = all.rbegin(); it != all.rend() && kept < keep_last; ++it) {
      if (verify_checkpoint(it->path, Verify::Sizes)) ++kept, oldest_kept = it->step;
    }
    // With fewer valid checkpoints than asked for, nothing but temporaries goes.
    if (kept == keep_last) {
      for (const CheckpointInfo& c : all) {
        if (c.step < *oldest_kept) removed.push_back(c.path);
      }
    }
  }
  for (const fs::path& p : removed) fs::remove_all(p);
  return removed;
}

std::string read_file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  LN_CHECK(in.good(), "[checkpoint] cannot open '", path.string(), "'");
  std::ostringstream s;
  s << in.rdbuf();
  LN_CHECK(!in.bad(), "[checkpoint] error reading '", path.string(), "'");
  return s.str();
}

}  // namespace longnet::io
