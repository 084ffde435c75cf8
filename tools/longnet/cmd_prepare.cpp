// `longnet prepare`: tokenise a corpus into HDF5 token stores (train.h5, val.h5).
#include <unistd.h>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <memory>
#include <thread>

#include "data/prepare.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/corpus_cli.h"
#include "tools/longnet/registry.h"

namespace longnet::tools {
namespace {

struct PrepareCli {
  CorpusCli corpus;
  data::PrepareOptions options;
  bool no_progress = false;
};

int run_prepare(const PrepareCli& cli) {
  data::PrepareOptions o = cli.options;
  o.corpus = cli.corpus.options();
  o.progress = !cli.no_progress;
  o.interactive = ::isatty(STDERR_FILENO) != 0;
  const data::PrepareReport r = data::prepare_store(o, std::cerr);
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::cout << std::fixed << std::setprecision(1) << "[prepare] " << r.corpus.documents << " documents, "
            << r.corpus.bytes_read / 1e6 << " MB in " << std::setprecision(2) << r.seconds << " s: "
            << std::setprecision(1) << r.documents_per_second() << " docs/s, " << std::setprecision(2)
            << r.mb_per_second() << " MB/s with " << threads << " thread(s)\n"
            << "[prepare] skipped " << r.corpus.empty_skipped << " empty, " << r.corpus.invalid_skipped
            << " invalid UTF-8";
  if (o.task == "doc2text") std::cout << ", " << r.untitled_skipped << " without a section title";
  std::cout << "\n";
  for (const data::PreparedSplit* s : {&r.train, &r.validation}) {
    if (s->path.empty()) continue;
    std::cout << "[prepare] wrote " << s->path << ": " << s->documents << " documents, " << s->tokens
              << " tokens\n";
  }
  return 0;
}

}  // namespace

void register_prepare(CLI::App& app) {
  auto cli = std::make_shared<PrepareCli>();
  CLI::App* p = app.add_subcommand("prepare", "Tokenise a corpus into HDF5 token stores (train.h5, val.h5)");
  add_corpus_options(p, cli->corpus);
  p->add_option("--tokenizer,-t", cli->options.tokenizer, "Tokenizer model (from `longnet tokenizer train`)")->required();
  p->add_option("--output,-o", cli->options.output_dir, "Output folder for train.h5 and val.h5")->required();
  p->add_option("--task", cli->options.task, "lm (documents) or doc2text (reST body -> section titles)")
      ->check(CLI::IsMember({"lm", "doc2text"}));
  p->add_option("--val-fraction", cli->options.val_fraction, "Share of documents held out for validation (0: none)");
  p->add_option("--seed", cli->options.seed, "Seed of the validation draw");
  p->add_option("--threads", cli->options.threads, "Tokenising threads (0: all cores)");
  p->add_flag("--no-progress", cli->no_progress, "No progress bar");
  on_run(p, [cli] { return run_prepare(*cli); });
}

}  // namespace longnet::tools
