// `longnet generate CHECKPOINT`: continue a prompt (streamed to the terminal as it is generated) or
// a batch of prompts from a file (one per line), with the samplers of models/sampling.h. An
// encoder-decoder instead writes a target (from a BOS token) for each source document.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "data/special_ids.h"
#include "framework/core/error.h"
#include "models/generation.h"
#include "tools/longnet/commands.h"
#include "tools/longnet/registry.h"
#include "tools/longnet/trainer_setup.h"

namespace longnet::tools {
namespace {

struct GenerateCli {
  std::string checkpoint;
  std::vector<std::string> prompts;
  std::string prompt_file;
  std::vector<std::string> sources;       // encoder-decoders: source documents
  std::vector<std::string> source_files;  // encoder-decoders: one source document per file
  std::string tokenizer;  // default: the checkpoint's
  GenerationConfig generation;
  bool no_stop = false;
  bool no_stream = false;
  std::string device = "auto";
  std::string dtype;
};

std::vector<std::string> read_prompt_file(const std::string& path) {
  std::ifstream in(path);
  LN_CHECK(in.good(), "[generate] cannot read --prompt-file '", path, "'");
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  LN_CHECK(!out.empty(), "[generate] --prompt-file '", path, "' has no non-empty line");
  return out;
}

std::string read_source_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LN_CHECK(in.good(), "[generate] cannot read --source-file '", path, "'");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A source document as a doc2text store holds it (its tokens, then EOS) and as the doc2text dataset
// feeds it to the encoder: cut to `source_len` tokens.
std::vector<int64_t> doc2text_source(const data::Tokenizer& tokenizer, const std::string& text, int64_t source_len) {
  std::vector<int64_t> ids;
  for (const int32_t id : tokenizer.encode(text)) ids.push_back(id);
  ids.push_back(data::SpecialIds::eos);
  if (static_cast<int64_t>(ids.size()) > source_len) ids.resize(static_cast<size_t>(source_len));
  return ids;
}

// The text of generated tokens, the end-of-document token left out.
std::string decode_text(const data::Tokenizer& tokenizer, const std::vector<int64_t>& tokens) {
  std::vector<int32_t> ids;
  for (const int64_t t : tokens) {
    if (t != data::SpecialIds::eos) ids.push_back(static_cast<int32_t>(t));
  }
  return tokenizer.decode(ids);
}

// Prints the text of a growing token list as it grows. A piece may end inside a UTF-8 character
// (byte fallback), so text is printed only once it extends what is already on the screen.
class TextStream {
 public:
  TextStream(const data::Tokenizer& tokenizer, std::FILE* out) : tokenizer_(tokenizer), out_(out) {}
  void push(int64_t token) {
    tokens_.push_back(static_cast<int32_t>(token));
    flush_extension();
  }
  void finish() {
    flush_extension();
    std::fputc('\n', out_);
    std::fflush(out_);
  }

 private:
  void flush_extension() {
    const std::string text = tokenizer_.decode(tokens_);
    if (text.size() > printed_.size() && text.compare(0, printed_.size(), printed_) == 0) {
      std::fwrite(text.data() + printed_.size(), 1, text.size() - printed_.size(), out_);
      std::fflush(out_);
      printed_ = text;
    }
  }
  const data::Tokenizer& tokenizer_;
  std::FILE* out_;
  std::vector<int32_t> tokens_;
  std::string printed_;
};

// An encoder-decoder's targets: each source is tokenized as a doc2text store holds it (its tokens,
// then EOS), cut to the training length as the doc2text dataset does, and encoded once; the target
// is generated from a BOS token.
int generate_targets(const GenerateCli& cli, const LoadedModel& m) {
  LN_CHECK(cli.prompts.empty() && cli.prompt_file.empty(), "[generate] '", m.checkpoint.string(),
           "' holds an encoder_decoder model, which writes a target for a source document: give --source TEXT or "
           "--source-file FILE instead of --prompt or --prompt-file");
  std::vector<std::string> texts = cli.sources;
  for (const std::string& f : cli.source_files) texts.push_back(read_source_file(f));
  LN_CHECK(!texts.empty(), "[generate] give a source document: --source TEXT or --source-file FILE (each repeatable)");
  const int64_t source_len = m.run_config.training.seq_len;
  std::vector<std::vector<int64_t>> sources;
  for (const std::string& text : texts) sources.push_back(doc2text_source(*m.tokenizer, text, source_len));
  const std::vector<std::vector<int64_t>> prompts(sources.size(), std::vector<int64_t>{data::SpecialIds::bos});
  GenerationConfig g = cli.generation;
  if (!cli.no_stop) g.stop_tokens = {data::SpecialIds::eos};
  const std::vector<GeneratedSequence> out = generate(m.seq2seq("generate"), sources, prompts, data::SpecialIds::pad, g);
  for (size_t i = 0; i < out.size(); ++i) {
    std::printf("### source %zu (%zu tokens, %s)\n%s\n\n", i + 1, out[i].tokens.size(), out[i].finish_reason.c_str(),
                decode_text(*m.tokenizer, out[i].tokens).c_str());
  }
  return 0;
}

int run_generate(GenerateCli cli) {
  const Device device = resolve_device(cli.device);
  LoadedModel m = load_model(cli.checkpoint, device, cli.dtype);
  if (!cli.tokenizer.empty()) m.tokenizer = data::Tokenizer::load(cli.tokenizer);
  LN_CHECK(m.tokenizer.has_value(), "[generate] the checkpoint ", m.checkpoint.string(),
           " has no tokenizer; pass --tokenizer MODEL");
  if (m.is_encoder_decoder()) return generate_targets(cli, m);
  LN_CHECK(cli.sources.empty() && cli.source_files.empty(), "[generate] --source and --source-file are for "
           "encoder_decoder models; '", m.checkpoint.string(), "' holds a ", m.kind(),
           " model, which continues a prompt: give --prompt TEXT or --prompt-file FILE");
  std::vector<std::string> texts = cli.prompts;
  if (!cli.prompt_file.empty()) {
    for (std::string& p : read_prompt_file(cli.prompt_file)) texts.push_back(std::move(p));
  }
  LN_CHECK(!texts.empty(), "[generate] give a prompt: --prompt TEXT (repeatable) or --prompt-file FILE");

  // Every prompt starts after an EOS, as a document does in the training windows.
  std::vector<std::vector<int64_t>> prompts;
  for (const std::string& text : texts) {
    std::vector<int64_t> ids{data::SpecialIds::eos};
    for (const int32_t id : m.tokenizer->encode(text)) ids.push_back(id);
    prompts.push_back(std::move(ids));
  }
  GenerationConfig g = cli.generation;
  if (!cli.no_stop) g.stop_tokens = {data::SpecialIds::eos};

  const bool stream = prompts.size() == 1 && !cli.no_stream;
  std::unique_ptr<TextStream> streamer;
  TokenCallback on_token;
  if (stream) {
    std::printf("%s", texts.front().c_str());
    streamer = std::make_unique<TextStream>(*m.tokenizer, stdout);
    on_token = [&](int64_t, int64_t token) {
      if (token != data::SpecialIds::eos) streamer->push(token);
    };
  }
  const std::vector<GeneratedSequence> out = generate(m.lm("generate"), prompts, g, on_token);
  if (stream) {
    streamer->finish();
    return 0;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    std::printf("### prompt %zu (%zu tokens, %s)\n%s%s\n\n", i + 1, out[i].tokens.size(), out[i].finish_reason.c_str(),
                texts[i].c_str(), decode_text(*m.tokenizer, out[i].tokens).c_str());
  }
  return 0;
}

}  // namespace

void register_generate(CLI::App& app) {
  auto cli = std::make_shared<GenerateCli>();
  cli->generation.sampling.temperature = 0.8;
  CLI::App* sub = app.add_subcommand("generate", "Continue prompts with a trained model (streamed to the terminal), or write "
                                                   "an encoder-decoder's targets for source documents");
  sub->add_option("checkpoint", cli->checkpoint, "Run directory (its newest valid checkpoint) or step-N/ checkpoint")
      ->required();
  sub->add_option("--prompt,-p", cli->prompts, "Prompt text (repeat for a batch)");
  sub->add_option("--prompt-file", cli->prompt_file, "File of prompts, one per line, generated as one batch");
  sub->add_option("--source", cli->sources, "Encoder-decoders: source document text (repeat for a batch)");
  sub->add_option("--source-file", cli->source_files,
                  "Encoder-decoders: file holding one source document (repeat for a batch)");
  sub->add_option("--tokenizer", cli->tokenizer, "SentencePiece model (default: the checkpoint's copy)");
  auto& g = cli->generation;
  sub->add_option("--max-new-tokens,-n", g.max_new_tokens, "Tokens generated per prompt at most")
      ->check(CLI::PositiveNumber);
  sub->add_option("--temperature", g.sampling.temperature, "0: greedy; otherwise logits are divided by it")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--top-k", g.sampling.top_k, "Draw among the k most likely tokens only (0: all)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--top-p", g.sampling.top_p, "Nucleus sampling: smallest set reaching this probability (1: all)")
      ->check(CLI::Range(0.0, 1.0));
  sub->add_option("--repetition-penalty", g.sampling.repetition_penalty,
                  "CTRL's penalty on tokens already in the sequence (1: none)");
  sub->add_option("--seed", g.sampling.seed, "Seed of the draws");
  sub->add_flag("--no-stop", cli->no_stop, "Do not stop at the end-of-document token");
  sub->add_flag("--no-stream", cli->no_stream, "Print a single prompt's result at the end instead of streaming it");
  sub->add_option("--device", cli->device, "auto, cpu or cuda[:N]");
  sub->add_option("--dtype", cli->dtype, "Compute dtype f32 or bf16 (default: the run's)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  on_run(sub, [cli] {
    check_sampling_config(cli->generation.sampling);
    return run_generate(*cli);
  });
}

}  // namespace longnet::tools
