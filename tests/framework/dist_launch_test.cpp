// Launch variables, the TCP rendezvous (ranks as threads on the local host) and the local spawner
// (real child processes running the shell).
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <thread>

#include "framework/dist/launch.h"
#include "tests/support/gradcheck.h"

namespace longnet::dist {
namespace {

using testing::error_message;

std::function<const char*(const char*)> env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

TEST(Launch, ReadsEachLauncherConvention) {
  LaunchInfo a = launch_info_from_env(env_of({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"},
                                              {"MASTER_ADDR", "node7"}, {"MASTER_PORT", "1234"}}));
  EXPECT_EQ(a.source, "env");
  EXPECT_EQ(a.rank, 3);
  EXPECT_EQ(a.world_size, 8);
  EXPECT_EQ(a.local_rank, 1);
  EXPECT_EQ(a.master_addr, "node7");
  EXPECT_EQ(a.master_port, 1234);
  // mpirun without MASTER_ADDR: one node, rank 0 on the local host.
  LaunchInfo m = launch_info_from_env(env_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}}));
  EXPECT_EQ(m.source, "openmpi");
  EXPECT_EQ(m.rank, 1);
  EXPECT_EQ(m.local_rank, 1);
  EXPECT_EQ(m.master_addr, "127.0.0.1");
  EXPECT_EQ(m.master_port, 29500);
  LaunchInfo s = launch_info_from_env(env_of({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "6"}, {"SLURM_LOCALID", "2"},
                                              {"RANK", "4"}, {"WORLD_SIZE", "6"}}));
  EXPECT_EQ(s.source, "env");  // the generic variables win
  EXPECT_EQ(s.rank, 4);
  LaunchInfo none = launch_info_from_env(env_of({}));
  EXPECT_EQ(none.source, "none");
  EXPECT_EQ(none.world_size, 1);
}

TEST(Launch, BadVariablesAreReported) {
  EXPECT_NE(error_message([] { launch_info_from_env(env_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}})); })
                .find("RANK='x' is not a non-negative integer"),
            std::string::npos);
  EXPECT_NE(error_message([] { launch_info_from_env(env_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}})); })
                .find("RANK=2 is not below WORLD_SIZE=2"),
            std::string::npos);
  EXPECT_NE(error_message([] { launch_info_from_env(env_of({{"SLURM_PROCID", "0"}})); })
                .find("SLURM_PROCID is set but SLURM_NTASKS is not"),
            std::string::npos);
}

int free_port() {
  // A port unlikely to collide between concurrent test binaries.
  return 20000 + static_cast<int>(::getpid() % 20000);
}

TEST(Rendezvous, RankZerosPayloadReachesEveryRank) {
  const int n = 4, port = free_port();
  std::vector<std::string> got(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      LaunchInfo info;
      info.rank = r;
      info.world_size = n;
      info.master_port = port;
      got[r] = rendezvous_broadcast(info, r == 0 ? std::string("unique-id\0bytes", 15) : "ignored",
                                    std::chrono::seconds(20));
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) EXPECT_EQ(got[r], std::string("unique-id\0bytes", 15)) << r;
}

TEST(Rendezvous, AnAbsentRankZeroTimesOut) {
  LaunchInfo info;
  info.rank = 1;
  info.world_size = 2;
  info.master_port = free_port() + 1;
  EXPECT_NE(error_message([&] { rendezvous_broadcast(info, "", std::chrono::milliseconds(200)); })
                .find("could not reach rank 0 at 127.0.0.1:"),
            std::string::npos);
}

TEST(SpawnLocal, SetsTheRankVariablesAndWaits) {
  const std::string dir = ::testing::TempDir();
  const int code = spawn_local(
      3, {"sh", "-c", "echo $RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT > " + dir + "/spawn_$RANK.txt"},
      4321);
  EXPECT_EQ(code, 0);
  for (int r = 0; r < 3; ++r) {
    std::ifstream in(dir + "/spawn_" + std::to_string(r) + ".txt");
    std::string line;
    std::getline(in, line);
    EXPECT_EQ(line, std::to_string(r) + " " + std::to_string(r) + " 3 127.0.0.1 4321");
  }
}

TEST(SpawnLocal, OneFailureStopsTheOthers) {
  // Rank 1 fails at once; the others would sleep for a minute unless stopped.
  const auto start = std::chrono::steady_clock::now();
  const int code = spawn_local(3, {"sh", "-c", "if [ $RANK = 1 ]; then exit 7; fi; sleep 60"}, 4322,
                               std::chrono::milliseconds(500));
  EXPECT_EQ(code, 7);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

TEST(SpawnLocal, PassesSigintOnToEveryRank) {
  // The ranks sit in process groups of their own, out of reach of a terminal's Ctrl-C; the
  // spawner hands it on, and each rank exits with its own status when it gets it.
  const auto start = std::chrono::steady_clock::now();
  std::thread interrupt([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    ::kill(::getpid(), SIGINT);
  });
  const int code = spawn_local(2, {"sh", "-c", "trap 'exit 5' INT; sleep 60 & wait"}, 4323,
                               std::chrono::milliseconds(500));
  interrupt.join();
  EXPECT_EQ(code, 5);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
}

}  // namespace
}  // namespace longnet::dist
