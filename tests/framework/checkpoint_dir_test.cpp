// Atomic checkpoint directories: commit and verify, the newest valid checkpoint skipping torn,
// corrupted and foreign directories, keep-last pruning, replacing a step, and a child process
// SIGKILLed while writing a checkpoint (the previous one stays the newest valid and loads).
#include "framework/io/checkpoint_dir.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "framework/core/error.h"

namespace longnet::io {
namespace {

namespace fs = std::filesystem;

class CheckpointDir : public ::testing::Test {
 protected:
  void SetUp() override {
    run_ = fs::temp_directory_path() /
           ("longnet-ckpt-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(run_);
  }
  void TearDown() override { fs::remove_all(run_); }

  // A checkpoint with a model file whose bytes depend on the step, and a small nested file.
  fs::path save(int64_t step) {
    CheckpointWriter w(run_, step);
    w.write_file("model.bin", payload(step));
    w.write_file("state/trainer.json", "{\"step\": " + std::to_string(step) + "}");
    return w.commit();
  }

  static std::string payload(int64_t step) {
    std::string s(10000 + step, '\0');
    for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>((i * 31 + step * 7) & 0xff);
    return s;
  }

  fs::path run_;
};

TEST_F(CheckpointDir, CommitPublishesAVerifiedDirectory) {
  const fs::path p = save(5);
  EXPECT_EQ(p, run_ / "step-5");
  EXPECT_TRUE(fs::is_directory(p));
  EXPECT_EQ(read_file_bytes(p / "model.bin"), payload(5));
  EXPECT_EQ(read_file_bytes(p / "state/trainer.json"), "{\"step\": 5}");
  std::string why;
  EXPECT_TRUE(verify_checkpoint(p, Verify::Checksums, &why)) << why;
  // The manifest lists every file with its size.
  const auto m = nlohmann::json::parse(read_file_bytes(p / kCheckpointManifest));
  EXPECT_EQ(m["step"], 5);
  ASSERT_EQ(m["files"].size(), 2u);
  EXPECT_EQ(m["files"][0]["path"], "model.bin");
  EXPECT_EQ(m["files"][0]["size"], 10005);
  EXPECT_EQ(m["files"][1]["path"], "state/trainer.json");
  // Nothing temporary is left.
  for (const auto& e : fs::directory_iterator(run_)) EXPECT_EQ(e.path().filename(), "step-5");
  ASSERT_TRUE(newest_valid(run_).has_value());
  EXPECT_EQ(newest_valid(run_)->step, 5);
}

TEST_F(CheckpointDir, NewestValidSkipsBrokenCheckpoints) {
  save(1);
  save(2);
  save(3);
  save(10);
  // step-10: one byte flipped (same size): only the checksum notices.
  {
    std::fstream f(run_ / "step-10" / "model.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1234);
    f.put('\x7f' ^ payload(10)[1234]);
  }
  std::string why;
  EXPECT_TRUE(verify_checkpoint(run_ / "step-10", Verify::Sizes, &why));
  EXPECT_FALSE(verify_checkpoint(run_ / "step-10", Verify::Checksums, &why));
  EXPECT_EQ(why, "'model.bin' does not match its checksum");
  // step-3: truncated file.
  fs::resize_file(run_ / "step-3" / "model.bin", 100);
  EXPECT_FALSE(verify_checkpoint(run_ / "step-3", Verify::Sizes, &why));
  EXPECT_EQ(why, "'model.bin' has 100 bytes, the manifest says 10003");
  // A directory that looks like a checkpoint but has no manifest, and one with a torn manifest.
  fs::create_directories(run_ / "step-20");
  std::ofstream(run_ / "step-20" / "model.bin") << "x";
  EXPECT_FALSE(verify_checkpoint(run_ / "step-20", Verify::Checksums, &why));
  EXPECT_EQ(why, "no manifest.json");
  fs::create_directories(run_ / "step-30");
  std::ofstream(run_ / "step-30" / kCheckpointManifest) << "{\"format\": \"longnet-check";
  EXPECT_FALSE(verify_checkpoint(run_ / "step-30", Verify::Checksums, &why));
  EXPECT_NE(why.find("unreadable manifest"), std::string::npos) << why;
  // A manifest copied from another step.
  fs::copy(run_ / "step-2", run_ / "step-40", fs::copy_options::recursive);
  EXPECT_FALSE(verify_checkpoint(run_ / "step-40", Verify::Checksums, &why));
  EXPECT_EQ(why, "the manifest is for step 2, the directory for step 40");
  // Temporary directories are not checkpoints.
  fs::copy(run_ / "step-1", run_ / "step-50.tmp-1", fs::copy_options::recursive);

  std::vector<int64_t> steps;
  for (const auto& c : list_checkpoints(run_)) steps.push_back(c.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 10, 20, 30, 40}));
  ASSERT_TRUE(newest_valid(run_).has_value());
  EXPECT_EQ(newest_valid(run_)->step, 2);
  EXPECT_EQ(newest_valid(run_, Verify::Sizes)->step, 10);
  EXPECT_FALSE(newest_valid(run_ / "nothing-here").has_value());
}

TEST_F(CheckpointDir, KeepLastPrunesOlderCheckpointsAndDeadTemporaries) {
  for (int64_t s = 1; s <= 5; ++s) save(s);
  // step-5 is broken: the two newest valid ones are 3 and 4; the broken newer one stays.
  fs::remove(run_ / "step-5" / "model.bin");
  // A temporary of a process that no longer runs, and one of this process.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  const fs::path dead = run_ / ("step-6.tmp-" + std::to_string(child));
  const fs::path mine = run_ / ("step-7.tmp-" + std::to_string(::getpid()));
  fs::create_directories(dead);
  fs::create_directories(mine);
  const auto removed = prune_checkpoints(run_, 2);
  EXPECT_EQ(removed.size(), 3u);
  EXPECT_FALSE(fs::exists(run_ / "step-1"));
  EXPECT_FALSE(fs::exists(run_ / "step-2"));
  EXPECT_FALSE(fs::exists(dead));
  EXPECT_TRUE(fs::exists(mine));
  for (int64_t s : {3, 4, 5}) EXPECT_TRUE(fs::exists(run_ / ("step-" + std::to_string(s)))) << s;
  // Fewer valid checkpoints than asked for: nothing is removed.
  EXPECT_TRUE(prune_checkpoints(run_, 3).empty());
  EXPECT_TRUE(fs::exists(run_ / "step-3"));
  // keep_last 0 keeps everything.
  EXPECT_TRUE(prune_checkpoints(run_, 0).empty());
}

TEST_F(CheckpointDir, SavingAStepAgainReplacesIt) {
  save(8);
  CheckpointWriter w(run_, 8);
  w.write_file("model.bin", "new");
  w.commit();
  EXPECT_EQ(read_file_bytes(run_ / "step-8" / "model.bin"), "new");
  EXPECT_FALSE(fs::exists(run_ / "step-8" / "state"));
  EXPECT_TRUE(verify_checkpoint(run_ / "step-8"));
  EXPECT_EQ(list_checkpoints(run_).size(), 1u);
}

TEST_F(CheckpointDir, AbandonedWriterLeavesNothing) {
  save(1);
  {
    CheckpointWriter w(run_, 2);
    w.write_file("model.bin", "partial");
    EXPECT_TRUE(fs::exists(w.dir()));
  }
  for (const auto& e : fs::directory_iterator(run_)) EXPECT_EQ(e.path().filename(), "step-1");
}

TEST_F(CheckpointDir, WriterErrors) {
  CheckpointWriter w(run_, 1);
  EXPECT_THROW(w.file("../escape"), Error);
  EXPECT_THROW(w.file("/abs"), Error);
  try {
    w.write_file("manifest.json", "{}");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reserved for the manifest"), std::string::npos);
  }
  w.commit();
  EXPECT_THROW(w.commit(), Error);
  EXPECT_THROW(CheckpointWriter(run_, -1), Error);
}

TEST_F(CheckpointDir, ProcessKilledWhileSavingLeavesThePreviousCheckpoint) {
  save(100);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child writes step 200 slowly: one file complete, then a second one piece by piece, and
    // tells the parent when it is half-way.
    ::close(ready[0]);
    try {
      CheckpointWriter w(run_, 200);
      w.write_file("model.bin", payload(200));
      std::ofstream big(w.file("optimizer.bin"), std::ios::binary);
      for (int i = 0;; ++i) {
        big << std::string(4096, 'o') << std::flush;
        if (i == 8) (void)!::write(ready[1], "x", 1);
        ::usleep(1000);
      }
    } catch (...) {
      ::_exit(1);
    }
  }
  ::close(ready[1]);
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  // The half-written checkpoint is only a temporary directory.
  const fs::path tmp = run_ / ("step-200.tmp-" + std::to_string(child));
  EXPECT_TRUE(fs::exists(tmp / "model.bin"));
  EXPECT_FALSE(fs::exists(run_ / "step-200"));
  const auto newest = newest_valid(run_);
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(newest->step, 100);
  EXPECT_EQ(read_file_bytes(newest->path / "model.bin"), payload(100));
  EXPECT_EQ(read_file_bytes(newest->path / "state/trainer.json"), "{\"step\": 100}");
  // The next save works, and pruning removes the dead process's leftovers.
  save(300);
  const auto removed = prune_checkpoints(run_, 1);
  EXPECT_EQ(removed.size(), 2u);  // step-100 and the temporary
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_EQ(newest_valid(run_)->step, 300);
}

}  // namespace
}  // namespace longnet::io
