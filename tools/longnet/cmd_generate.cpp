// `longnet generate CHECKPOINT`: continue a prompt (streamed to the terminal as it is generated) or
// a batch of prompts from a file (one per line), with the samplers of models/sampling.h.
#include <cstdio>
#include <fstream>
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

int run_generate(GenerateCli cli) {
  const Device device = resolve_device(cli.device);
  LoadedModel m = load_model(cli.checkpoint, device, cli.dtype);
  if (!cli.tokenizer.empty()) m.tokenizer = data::Tokenizer::load(cli.tokenizer);
  LN_CHECK(m.tokenizer.has_value(), "[generate] the checkpoint ", m.checkpoint.string(),
           " has no tokenizer; pass --tokenizer MODEL");
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
  const std::vector<GeneratedSequence> out = generate(*m.model, prompts, g, on_token);
  if (stream) {
    streamer->finish();
    return 0;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    std::vector<int32_t> ids;
    for (const int64_t t : out[i].tokens) {
      if (t != data::SpecialIds::eos) ids.push_back(static_cast<int32_t>(t));
    }
    std::printf("### prompt %zu (%zu tokens, %s)\n%s%s\n\n", i + 1, out[i].tokens.size(), out[i].finish_reason.c_str(),
                texts[i].c_str(), m.tokenizer->decode(ids).c_str());
  }
  return 0;
}

}  // namespace

void register_generate(CLI::App& app) {
  auto cli = std::make_shared<GenerateCli>();
  cli->generation.sampling.temperature = 0.8;
  CLI::App* sub = app.add_subcommand("generate", "Continue prompts with a trained model (streamed to the terminal)");
  sub->add_option("checkpoint", cli->checkpoint, "Run directory (its newest valid checkpoint) or step-N/ checkpoint")
      ->required();
  sub->add_option("--prompt,-p", cli->prompts, "Prompt text (repeat for a batch)");
  sub->add_option("--prompt-file", cli->prompt_file, "File of prompts, one per line, generated as one batch");
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
