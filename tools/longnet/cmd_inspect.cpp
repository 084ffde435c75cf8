// `longnet inspect FILE`: describes a file the program made, chosen by what the file is.
#include <cerrno>
#include <chrono>
#include <iomanip>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/token_store.h"
#include "data/tokenizer.h"
#include "framework/core/error.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/registry.h"

namespace longnet::tools {
namespace {

struct InspectCli {
  std::string path;
  bool verify = false;
  int pieces = 20;
  // Loader read speed (token stores).
  bool read_speed = false;
  int64_t seq_len = 8192;
  int64_t batch_size = 8;
  std::string window_mode = "random";
  double seconds = 3;
  bool no_preload = false;
};

// One kind of file inspect knows: a cheap test on the file, and what to print. The first that
// matches wins, so more specific kinds come first.
struct Inspector {
  const char* kind;
  bool (*matches)(const std::string& path);
  int (*run)(const InspectCli& cli);
};

bool is_sentencepiece_model(const std::string& path) {
  try {
    data::Tokenizer::load(path);
    return true;
  } catch (const Error&) {
    return false;
  }
}

// Batches through the loader (background prefetch, CPU tensors) for about cli.seconds.
void measure_read_speed(const InspectCli& cli, std::shared_ptr<const data::TokenStore> store) {
  auto dataset = std::make_shared<data::WindowDataset>(std::move(store), cli.seq_len,
                                                       data::window_mode_from_string(cli.window_mode));
  data::LoaderOptions o;
  o.batch_size = cli.batch_size;
  data::Loader loader(dataset, o);
  loader.next();  // warm-up: thread start, first batch
  const auto start = std::chrono::steady_clock::now();
  int64_t batches = 0;
  double elapsed = 0;
  while (elapsed < cli.seconds) {
    loader.next();
    ++batches;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  const double tokens = static_cast<double>(batches * cli.batch_size * (cli.seq_len + 1));
  std::cout << std::fixed << std::setprecision(0) << "  loader          " << tokens / elapsed
            << " tokens/s (" << batches << " batches of " << cli.batch_size << " x " << cli.seq_len + 1
            << ", " << cli.window_mode << " windows, in " << std::setprecision(2) << elapsed << " s)\n";
}

int inspect_store(const InspectCli& cli) {
  data::StoreOpenOptions open;
  if (cli.no_preload) open.preload_max_bytes = 0;
  const auto store = data::TokenStore::open(cli.path, open);
  std::cout << store->summary();
  if (cli.verify) std::cout << "  " << store->verify() << "\n";
  if (cli.read_speed) measure_read_speed(cli, store);
  return 0;
}

int inspect_tokenizer(const InspectCli& cli) {
  std::cout << data::tokenizer_summary(data::Tokenizer::load(cli.path), cli.pieces);
  return 0;
}

constexpr Inspector kInspectors[] = {
    {"HDF5 token store", data::is_hdf5_file, inspect_store},
    {"SentencePiece model", is_sentencepiece_model, inspect_tokenizer},
};

int run_inspect(const InspectCli& cli) {
  {
    std::ifstream probe(cli.path, std::ios::binary);
    LN_CHECK(probe.good(), "[inspect] cannot read ", cli.path, ": ", std::strerror(errno));
  }
  for (const Inspector& i : kInspectors) {
    if (i.matches(cli.path)) return i.run(cli);
  }
  std::string known;
  for (const Inspector& i : kInspectors) known += std::string(known.empty() ? "" : ", ") + i.kind;
  LN_FAIL("[inspect] ", cli.path, " is none of the files inspect knows (", known, ")");
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto cli = std::make_shared<InspectCli>();
  CLI::App* i = app.add_subcommand("inspect", "Describe a token store (.h5) or a tokenizer model");
  i->add_option("file", cli->path, "The file")->required();
  i->add_flag("--verify", cli->verify, "Token store: read every token, check ids and the checksum");
  i->add_option("--pieces", cli->pieces, "Tokenizer: how many pieces to list");
  i->add_flag("--read-speed", cli->read_speed, "Token store: measure loader throughput (tokens/s)");
  i->add_option("--seq-len", cli->seq_len, "--read-speed: tokens per window, minus one");
  i->add_option("--batch-size", cli->batch_size, "--read-speed: windows per batch");
  i->add_option("--window-mode", cli->window_mode, "--read-speed: random, document or within_document")
      ->check(CLI::IsMember({"random", "document", "within_document"}));
  i->add_option("--seconds", cli->seconds, "--read-speed: how long to measure");
  i->add_flag("--no-preload", cli->no_preload, "Read windows from the file instead of memory");
  on_run(i, [cli] { return run_inspect(*cli); });
}

}  // namespace longnet::tools
