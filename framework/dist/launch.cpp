#include "framework/dist/launch.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "framework/core/error.h"

namespace longnet::dist {
namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_forward_signal{0};

extern "C" void record_forward_signal(int sig) { g_forward_signal.store(sig); }

// Ctrl-C reaches the spawner's process group only (each rank has a group of its own), and SIGTERM
// the spawner alone: while the ranks run, both are recorded here and passed on to every rank.
class ForwardedSignals {
 public:
  ForwardedSignals() {
    g_forward_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = record_forward_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~ForwardedSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  ForwardedSignals(const ForwardedSignals&) = delete;
  ForwardedSignals& operator=(const ForwardedSignals&) = delete;
  /// The signal received since the last call, or 0.
  int take() { return g_forward_signal.exchange(0); }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

int parse_int(const char* name, const char* value) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value, &end, 10);
  LN_CHECK(errno == 0 && end != value && *end == '\0' && v >= 0 && v < (1L << 30), "[launch] ", name, "='", value,
           "' is not a non-negative integer");
  return static_cast<int>(v);
}

/// Closes a socket when it leaves scope.
struct Socket {
  int fd = -1;
  explicit Socket(int f = -1) : fd(f) {}
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
};

void send_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    LN_CHECK(k > 0 || errno == EINTR, "[rendezvous] send failed: ", std::strerror(errno));
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
    }
  }
}

void recv_all(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = ::recv(fd, p, n, 0);
    LN_CHECK(k != 0, "[rendezvous] rank 0 closed the connection early");
    LN_CHECK(k > 0 || errno == EINTR || errno == EAGAIN, "[rendezvous] receive failed: ", std::strerror(errno));
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
    }
  }
}

void set_timeout(int fd, std::chrono::milliseconds t) {
  timeval tv{static_cast<time_t>(t.count() / 1000), static_cast<suseconds_t>((t.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

addrinfo* resolve(const LaunchInfo& info) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(info.master_port);
  const int rc = ::getaddrinfo(info.master_addr.c_str(), port.c_str(), &hints, &res);
  LN_CHECK(rc == 0 && res, "[rendezvous] cannot resolve MASTER_ADDR '", info.master_addr, "': ", gai_strerror(rc));
  return res;
}

std::string where(const LaunchInfo& info) { return info.master_addr + ":" + std::to_string(info.master_port); }

std::string serve(const LaunchInfo& info, const std::string& payload, std::chrono::milliseconds timeout) {
  Socket s(::socket(AF_INET, SOCK_STREAM, 0));
  LN_CHECK(s.fd >= 0, "[rendezvous] socket: ", std::strerror(errno));
  const int one = 1;
  ::setsockopt(s.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(info.master_port));
  LN_CHECK(::bind(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0, "[rendezvous] rank 0 cannot listen on port ",
           info.master_port, ": ", std::strerror(errno), " (set MASTER_PORT to a free port)");
  LN_CHECK(::listen(s.fd, info.world_size) == 0, "[rendezvous] listen: ", std::strerror(errno));
  set_timeout(s.fd, timeout);
  const uint64_t size = payload.size();
  for (int served = 1; served < info.world_size; ++served) {
    Socket c(::accept(s.fd, nullptr, nullptr));
    LN_CHECK(c.fd >= 0, "[rendezvous] rank 0 waited for ", info.world_size - served, " of ", info.world_size - 1,
             " ranks on ", where(info), ": ", std::strerror(errno));
    set_timeout(c.fd, timeout);
    send_all(c.fd, &size, sizeof size);
    send_all(c.fd, payload.data(), payload.size());
  }
  return payload;
}

std::string fetch(const LaunchInfo& info, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  addrinfo* res = resolve(info);
  std::string last_error;
  while (Clock::now() < deadline) {
    Socket s(::socket(AF_INET, SOCK_STREAM, 0));
    LN_CHECK(s.fd >= 0, "[rendezvous] socket: ", std::strerror(errno));
    if (::connect(s.fd, res->ai_addr, res->ai_addrlen) == 0) {
      ::freeaddrinfo(res);
      set_timeout(s.fd, timeout);
      uint64_t size = 0;
      recv_all(s.fd, &size, sizeof size);
      LN_CHECK(size < (uint64_t{1} << 20), "[rendezvous] implausible payload of ", size, " bytes from ", where(info));
      std::string payload(size, '\0');
      recv_all(s.fd, payload.data(), size);
      return payload;
    }
    last_error = std::strerror(errno);
    // Rank 0 may not be listening yet.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::freeaddrinfo(res);
  LN_FAIL("[rendezvous] rank ", info.rank, " could not reach rank 0 at ", where(info), " within ", timeout.count(),
          " ms: ", last_error);
}

}  // namespace

LaunchInfo launch_info_from_env(const std::function<const char*(const char*)>& getenv_fn) {
  const auto get = [&](const char* name) -> const char* {
    const char* v = getenv_fn ? getenv_fn(name) : std::getenv(name);
    return v && *v ? v : nullptr;
  };
  LaunchInfo info;
  struct Scheme {
    const char* source;
    const char* rank;
    const char* size;
    const char* local;
  };
  for (const Scheme& s : {Scheme{"env", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
                          Scheme{"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
                          Scheme{"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"}}) {
    if (!get(s.rank)) continue;
    LN_CHECK(get(s.size), "[launch] ", s.rank, " is set but ", s.size, " is not");
    info.source = s.source;
    info.rank = parse_int(s.rank, get(s.rank));
    info.world_size = parse_int(s.size, get(s.size));
    info.local_rank = get(s.local) ? parse_int(s.local, get(s.local)) : 0;
    LN_CHECK(info.world_size >= 1 && info.rank < info.world_size, "[launch] ", s.rank, "=", info.rank,
             " is not below ", s.size, "=", info.world_size);
    break;
  }
  if (const char* a = get("MASTER_ADDR")) info.master_addr = a;
  if (const char* p = get("MASTER_PORT")) {
    info.master_port = parse_int("MASTER_PORT", p);
    LN_CHECK(info.master_port > 0 && info.master_port < 65536, "[launch] MASTER_PORT=", p, " is not a port");
  }
  return info;
}

std::string rendezvous_broadcast(const LaunchInfo& info, const std::string& payload, std::chrono::milliseconds timeout) {
  if (info.world_size == 1) return payload;
  return info.rank == 0 ? serve(info, payload, timeout) : fetch(info, timeout);
}

int spawn_local(int nproc, const std::vector<std::string>& argv, int master_port, std::chrono::milliseconds grace) {
  LN_CHECK(nproc >= 1, "[spawn_local] needs at least one process, got ", nproc);
  LN_CHECK(!argv.empty(), "[spawn_local] no command to run");
  ForwardedSignals forwarded;
  std::vector<pid_t> pids;
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    LN_CHECK(pid >= 0, "[spawn_local] fork failed: ", std::strerror(errno));
    if (pid == 0) {
      // A process group per rank, so that stopping a rank also stops what it started.
      ::setpgid(0, 0);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(master_port).c_str(), 1);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      // Only reached when exec failed; the child must not return into the parent's code.
      std::fprintf(stderr, "[spawn_local] cannot run %s: %s\n", args[0], std::strerror(errno));
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here: whichever of parent and child runs first
    pids.push_back(pid);
  }
  int result = 0;
  size_t alive = pids.size();
  auto kill_deadline = Clock::time_point::max();
  while (alive > 0) {
    if (const int sig = forwarded.take()) {
      for (pid_t p : pids) {
        if (p > 0) ::kill(-p, sig);
      }
    }
    bool reaped = false;
    for (size_t r = 0; r < pids.size(); ++r) {
      int status = 0;
      if (pids[r] <= 0 || ::waitpid(pids[r], &status, WNOHANG) != pids[r]) continue;
      pids[r] = -1;
      --alive;
      reaped = true;
      const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      if (code != 0 && result == 0) {
        result = code;
        std::fprintf(stderr, "[spawn_local] rank %zu exited with status %d; stopping the others\n", r, code);
        for (pid_t p : pids) {
          if (p > 0) ::kill(-p, SIGTERM);
        }
        kill_deadline = Clock::now() + grace;
      }
    }
    if (reaped) continue;
    if (Clock::now() >= kill_deadline) {
      for (pid_t p : pids) {
        if (p > 0) ::kill(-p, SIGKILL);
      }
      kill_deadline = Clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return result;
}

}  // namespace longnet::dist
