// `bench dist` comm section: the communicator's achieved bandwidth. all_reduce is reported as
// algorithm bandwidth (bytes / time) and bus bandwidth (nccl-tests' convention: algbw x 2(n-1)/n,
// the traffic each link carries in a ring, comparable with the link's one-way figure); send/recv
// between rank 0 and every other rank, one way in each direction and both ways at once (the
// pattern of ring attention).
#include <algorithm>
#include <string>

#include "framework/core/dtype.h"
#include "framework/core/error.h"
#include "framework/ops/factory.h"
#include "tools/longnet/bench_dist.h"
#include "tools/longnet/bench_dist_internal.h"
#include "tools/longnet/bench_timing.h"

namespace longnet::tools {
namespace {

using dist_bench::max_over_ranks;
using dist_bench::printf_string;
using dist_bench::size_label;

// Operations per timed run: enough to hide the event overhead for small sizes, while a gated batch
// of runs stays far below the launch queue's depth (each operation is a few stream commands).
int operations_per_run(int64_t bytes) {
  const int64_t by_size = (int64_t{256} << 20) / std::max<int64_t>(bytes, 1);
  return static_cast<int>(std::clamp<int64_t>(by_size, 2, 10));
}

std::vector<int64_t> sizes(const DistBenchOptions& o) {
  LN_CHECK(o.comm_min_bytes > 0 && o.comm_min_bytes <= o.comm_max_bytes, "bench dist: comm sizes must satisfy 0 < min (",
           o.comm_min_bytes, ") <= max (", o.comm_max_bytes, ")");
  std::vector<int64_t> out;
  for (int64_t b = o.comm_min_bytes; b <= o.comm_max_bytes; b *= 2) out.push_back(b);
  return out;
}

double gb_per_s(int64_t bytes, double us) { return static_cast<double>(bytes) / (us * 1e-6) / 1e9; }

// Microseconds per operation of `op` (issued `ops` times per run), the slowest rank's median run.
// Every rank calls this; ranks with nothing to do pass an op that does nothing.
double time_operation(dist::Communicator& world, Device device, const DistBenchOptions& o, int ops,
                      const std::function<void()>& op) {
  world.barrier();
  const double ms = median_ms(
      [&] {
        for (int i = 0; i < ops; ++i) op();
      },
      device, std::max(1, o.comm_runs), 1, /*gated=*/true);
  return max_over_ranks(world, device, {ms})[0] * 1e3 / ops;
}

std::string link_share(const LinkNominal& link, double gbs) {
  if (!link.known() || link.per_direction_gb_per_s <= 0) return "-";
  return printf_string("%.1f%%", 100.0 * gbs / link.per_direction_gb_per_s);
}

}  // namespace

LinkNominal nominal_link(const std::string& device_name) {
  // NVLink 4: 18 links of 25 GB/s each way per GPU (H100 SXM, H200 SXM and NVL bridges).
  const bool h200 = device_name.find("H200") != std::string::npos;
  const bool h100_sxm = device_name.find("H100") != std::string::npos && device_name.find("HBM3") != std::string::npos;
  if (h200 || h100_sxm) return {"NVLink 4", 900.0, 450.0};
  return {};
}

CommResult bench_dist_comm(dist::Communicator& world, Device device, const DistBenchOptions& o) {
  CommResult r;
  r.ranks = world.size();
  r.device = dist_bench::device_name(device);
  r.backend = world.backend();
  r.link = nominal_link(r.device);
  r.runs = std::max(1, o.comm_runs);
  const int n = world.size(), me = world.rank();
  const std::vector<int64_t> all_sizes = sizes(o);

  for (const std::string& name : o.comm_dtypes) {
    const DType dtype = dtype_from_name(name);
    for (const int64_t bytes : all_sizes) {
      // Zeros: the sums stay finite however often they are reduced.
      const Tensor t = zeros({std::max<int64_t>(1, bytes / static_cast<int64_t>(dtype_size(dtype)))}, dtype, device);
      const int ops = operations_per_run(bytes);
      const double us = time_operation(world, device, o, ops, [&] { world.all_reduce_async(t, dist::ReduceOp::Sum)->wait(); });
      const double alg = gb_per_s(bytes, us);
      r.rows.push_back({"all_reduce", name, bytes, us, alg, alg * 2.0 * (n - 1) / n});
    }
  }

  for (int peer = 1; peer < n; ++peer) {
    for (const int64_t bytes : all_sizes) {
      const Tensor send = zeros({bytes / 2}, DType::BF16, device);
      const Tensor recv = zeros({bytes / 2}, DType::BF16, device);
      const int ops = operations_per_run(bytes);
      struct Direction {
        int from, to;
        bool both;
      };
      for (const Direction d : {Direction{0, peer, false}, Direction{peer, 0, false}, Direction{0, peer, true}}) {
        const int other = me == d.from ? d.to : d.from;
        const double us = time_operation(world, device, o, ops, [&] {
          if (me != d.from && me != d.to) return;
          if (d.both) {
            world.send_recv_async(send, other, recv, other)->wait();
          } else if (me == d.from) {
            world.send_recv_async(send, d.to, Tensor(), -1)->wait();
          } else {
            world.send_recv_async(Tensor(), -1, recv, d.from)->wait();
          }
        });
        const std::string label = d.both ? printf_string("%d<->%d", d.from, d.to) : printf_string("%d->%d", d.from, d.to);
        const double gbs = gb_per_s(bytes, us);
        r.rows.push_back({"send_recv", label, bytes, us, gbs, gbs});
      }
    }
  }
  return r;
}

std::string format_comm(const CommResult& r) {
  std::string s = printf_string("## Communicator bandwidth: %d ranks on %s (%s)\n\n", r.ranks, r.device.c_str(),
                                r.backend.c_str());
  if (r.link.known()) {
    s += printf_string("Link: %s (%s): %.0f GB/s bidirectional, %.0f GB/s each way (nominal). ", r.link.name.c_str(),
                       r.device.c_str(), r.link.bidirectional_gb_per_s, r.link.per_direction_gb_per_s);
  } else {
    s += printf_string("Link: unknown for %s. ", r.device.c_str());
  }
  s += printf_string(
      "Each figure: the median of %d runs of back-to-back operations (2 to 10 per run, by size) after a warm-up run, "
      "timed on each rank's compute stream with the runs queued in full before the first starts (CUDA events; "
      "wall clock on the CPU), then the slowest rank's; GB = 1e9 bytes. all_reduce: sum in place; algbw = bytes / "
      "time, busbw = algbw x 2(n-1)/n (nccl-tests' convention: what each link carries, comparable with the one-way "
      "figure). send_recv: bf16 buffers (a copy: the dtype does not matter) between rank 0 and each other rank; a->b "
      "one way, a<->b both at once (ring attention's pattern), bandwidth per direction.\n\n",
      r.runs);
  s += "| dtype | size | us | algbw GB/s | busbw GB/s | busbw / link |\n|---|---:|---:|---:|---:|---:|\n";
  const CommRow* best_reduce = nullptr;
  for (const CommRow& row : r.rows) {
    if (row.op != "all_reduce") continue;
    s += printf_string("| %s | %s | %.1f | %.1f | %.1f | %s |\n", row.detail.c_str(), size_label(row.bytes).c_str(),
                       row.us, row.gb_per_s, row.bus_gb_per_s, link_share(r.link, row.bus_gb_per_s).c_str());
    if (!best_reduce || row.bus_gb_per_s > best_reduce->bus_gb_per_s) best_reduce = &row;
  }
  const CommRow* best_one_way = nullptr;
  const CommRow* best_both = nullptr;
  bool header = false;
  for (const CommRow& row : r.rows) {
    if (row.op != "send_recv") continue;
    if (!header) {
      s += "\n| direction | size | us | GB/s per direction | / link one way |\n|---|---:|---:|---:|---:|\n";
      header = true;
    }
    s += printf_string("| %s | %s | %.1f | %.1f | %s |\n", row.detail.c_str(), size_label(row.bytes).c_str(), row.us,
                       row.gb_per_s, link_share(r.link, row.gb_per_s).c_str());
    const bool both = row.detail.find("<->") != std::string::npos;
    const CommRow*& best = both ? best_both : best_one_way;
    if (!best || row.gb_per_s > best->gb_per_s) best = &row;
  }
  if (!header) s += "\nsend_recv: no pairs in a world of one rank.\n";
  s += "\n";
  if (best_reduce) {
    s += printf_string("Best all_reduce busbw: %.1f GB/s (%s, %s)", best_reduce->bus_gb_per_s, best_reduce->detail.c_str(),
                       size_label(best_reduce->bytes).c_str());
    if (r.link.known()) s += printf_string(", %s of the link one way", link_share(r.link, best_reduce->bus_gb_per_s).c_str());
    s += ".";
  }
  if (best_one_way && best_both) {
    s += printf_string(" Best send_recv: %.1f GB/s one way (%s, %s), %.1f GB/s per direction both ways (%s, %s).",
                       best_one_way->gb_per_s, best_one_way->detail.c_str(), size_label(best_one_way->bytes).c_str(),
                       best_both->gb_per_s, best_both->detail.c_str(), size_label(best_both->bytes).c_str());
  }
  s += "\n\n";
  return s;
}

}  // namespace longnet::tools
