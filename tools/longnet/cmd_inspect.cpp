// `longnet inspect FILE`: describes a file the program made, chosen by what the file is.
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

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

int inspect_store(const InspectCli& cli) {
  const auto store = data::TokenStore::open(cli.path);
  std::cout << store->summary();
  if (cli.verify) std::cout << "  " << store->verify() << "\n";
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
  on_run(i, [cli] { return run_inspect(*cli); });
}

}  // namespace longnet::tools
