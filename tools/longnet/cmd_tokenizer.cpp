// `longnet tokenizer train | encode | decode`: SentencePiece models for the data pipeline.
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "data/corpus.h"
#include "data/tokenizer.h"
#include "framework/core/error.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/corpus_cli.h"
#include "tools/longnet/registry.h"

namespace longnet::tools {
namespace {

struct TrainCli {
  CorpusCli corpus;
  data::TokenizerTrainOptions train;
  bool no_byte_fallback = false;
  std::string output;
};

int run_train(const TrainCli& cli) {
  data::TokenizerTrainOptions o = cli.train;
  o.byte_fallback = !cli.no_byte_fallback;
  data::CorpusReader corpus(cli.corpus.options());
  std::cerr << "[tokenizer] training a " << o.vocab_size << "-piece " << o.model_type << " model on "
            << corpus.files().size() << " file(s), " << std::fixed << std::setprecision(1)
            << corpus.total_bytes() / 1e6 << " MB\n";
  data::TokenizerTrainReport report;
  const std::string model = data::train_tokenizer(corpus, o, &report);
  data::write_file_atomic(cli.output, model);
  const data::Tokenizer tok = data::Tokenizer::from_bytes(model, cli.output);
  std::cerr << "[tokenizer] " << report.corpus.documents << " documents in " << report.pieces
            << " training pieces; skipped " << report.corpus.empty_skipped << " empty, "
            << report.corpus.invalid_skipped << " invalid UTF-8\n";
  std::cout << data::tokenizer_summary(tok, 20);
  return 0;
}

}  // namespace

void register_tokenizer(CLI::App& app) {
  CLI::App* tok = app.add_subcommand("tokenizer", "Train and apply SentencePiece tokenizers");
  tok->require_subcommand(1);

  auto train = std::make_shared<TrainCli>();
  CLI::App* t = tok->add_subcommand("train", "Train a BPE or unigram model from text files");
  add_corpus_options(t, train->corpus);
  t->add_option("--output,-o", train->output, "Where to write the model (.model)")->required();
  t->add_option("--vocab-size", train->train.vocab_size, "Pieces in the vocabulary, special ids and bytes included");
  t->add_option("--model-type", train->train.model_type, "bpe or unigram")->check(CLI::IsMember({"bpe", "unigram"}));
  t->add_option("--seed", train->train.seed, "Seed of SentencePiece's sampling and shuffling");
  t->add_option("--threads", train->train.threads, "Training threads (0: all cores; unigram results depend on it)");
  t->add_option("--character-coverage", train->train.character_coverage,
                "Share of characters given their own piece; the rest use byte fallback");
  t->add_option("--max-piece-bytes", train->train.max_piece_bytes,
                "Documents are cut at line ends into training pieces of at most this many bytes");
  t->add_option("--max-pieces", train->train.max_pieces, "Sample this many training pieces (0: all)");
  t->add_flag("--no-byte-fallback", train->no_byte_fallback, "Map unseen characters to <unk> instead of bytes");
  t->add_flag("--verbose", train->train.verbose, "Show SentencePiece's own log");
  on_run(t, [train] { return run_train(*train); });

  auto model = std::make_shared<std::string>();
  auto text = std::make_shared<std::string>();
  CLI::App* enc = tok->add_subcommand("encode", "Print the token ids of a text (argument or stdin)");
  enc->add_option("--model,-m", *model, "Tokenizer model")->required();
  enc->add_option("text", *text, "Text to encode (default: read stdin)");
  on_run(enc, [model, text] {
    const data::Tokenizer tok = data::Tokenizer::load(*model);
    std::string input = *text;
    if (input.empty()) {
      std::ostringstream s;
      s << std::cin.rdbuf();
      input = s.str();
    }
    const auto ids = tok.encode(input);
    for (size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
    std::cout << "\n";
    return 0;
  });

  auto ids = std::make_shared<std::vector<int32_t>>();
  auto decode_model = std::make_shared<std::string>();
  CLI::App* dec = tok->add_subcommand("decode", "Print the text of token ids");
  dec->add_option("--model,-m", *decode_model, "Tokenizer model")->required();
  dec->add_option("ids", *ids, "Token ids")->required();
  on_run(dec, [decode_model, ids] {
    std::cout << data::Tokenizer::load(*decode_model).decode(*ids) << "\n";
    return 0;
  });
}

}  // namespace longnet::tools
