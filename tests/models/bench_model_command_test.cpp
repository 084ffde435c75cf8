// `longnet bench model` end to end on the CPU with the tiny preset: the table and its errors.
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace longnet {
namespace {

std::filesystem::path longnet_program() {
  return std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() / "tools" / "longnet";
}

// Runs longnet with `args`; returns its exit code and fills `output` with stdout and stderr.
int run_longnet(const std::string& args, std::string& output) {
  const std::filesystem::path log =
      std::filesystem::temp_directory_path() / ("longnet_bench_model_" + std::to_string(::getpid()) + ".log");
  const int status = std::system((longnet_program().string() + " " + args + " > " + log.string() + " 2>&1").c_str());
  std::ifstream in(log);
  std::stringstream s;
  s << in.rdbuf();
  output = s.str();
  std::filesystem::remove(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(BenchModelCommand, TinyPresetOnTheCpu) {
  if (!std::filesystem::exists(longnet_program())) GTEST_SKIP() << "build the longnet target first";
  std::string out;
  ASSERT_EQ(run_longnet("bench model --device cpu --preset tiny --dtype f32 --seq-len 16,32 --reps 1 --warmup 0", out), 0)
      << out;
  EXPECT_NE(out.find("tiny (20.6K parameters) on CPU"), std::string::npos) << out;
  EXPECT_NE(out.find("| 16 |"), std::string::npos) << out;
  EXPECT_NE(out.find("| 32 |"), std::string::npos) << out;
  EXPECT_NE(run_longnet("bench model --device cpu --preset 9b --seq-len 16", out), 0);
  EXPECT_NE(out.find("unknown preset '9b'"), std::string::npos) << out;
}

}  // namespace
}  // namespace longnet
