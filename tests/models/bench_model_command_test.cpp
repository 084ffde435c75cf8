// `longnet bench model` end to end on the CPU with the tiny preset: the table and its errors.
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "tests/support/program.h"

namespace longnet {
namespace {

using testing::longnet_program;
using testing::run_longnet;

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
