#include "tools/longnet/trainer_eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/special_ids.h"
#include "framework/autograd/grad_mode.h"
#include "framework/core/error.h"
#include "framework/ops/ops.h"
#include "models/generation.h"
#include "tools/longnet/trainer_dist.h"

namespace longnet::tools {

namespace {

// The windows' seed: fixed, so every evaluation scores the same text.
constexpr uint64_t kEvalWindowSeed = 20230706;

Device device_of(const Module& model) {
  const std::vector<Tensor> params = model.parameters();
  return params.empty() ? Device::cpu() : params.front().device();
}

std::string format_number(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

}  // namespace

double LossEstimate::perplexity() const { return std::exp(loss); }

LossEstimate evaluate_loss(LongNetLM& model, const std::shared_ptr<const data::TokenStore>& store,
                           int64_t seq_len, int64_t batch_size, int64_t max_windows) {
  LN_CHECK(seq_len >= 1 && batch_size >= 1 && max_windows >= 1, "[eval] seq_len (", seq_len, "), batch size (",
           batch_size, ") and windows (", max_windows, ") must be positive");
  auto dataset = std::make_shared<data::WindowDataset>(store, seq_len, data::WindowMode::kRandom);
  const int64_t batch = std::min(batch_size, dataset->size());
  data::LoaderOptions lo;
  lo.batch_size = batch;
  lo.seed = kEvalWindowSeed;
  lo.shuffle = false;
  lo.prefetch = 0;
  lo.device = device_of(model);
  data::Loader loader(dataset, lo);
  const int64_t batches = std::max<int64_t>(1, std::min(loader.batches_per_epoch(), max_windows / batch));

  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  double weighted = 0.0;
  LossEstimate e;
  e.seq_len = seq_len;
  for (int64_t b = 0; b < batches; ++b) {
    const data::Batch x = loader.next();
    const double loss = model.loss(x.inputs(), x.targets()).cross_entropy.item();
    const int64_t tokens = x.tokens().shape()[0] * seq_len;
    weighted += loss * static_cast<double>(tokens);
    e.tokens += tokens;
    e.windows += x.tokens().shape()[0];
  }
  model.train(was_training);
  e.loss = weighted / static_cast<double>(e.tokens);
  return e;
}

Doc2TextLoss doc2text_loss(const LongNetEncoderDecoder& model, const data::Batch& batch, int64_t ignore_index) {
  const Tensor& source = batch.field("source");
  const Tensor& target = batch.field("target");
  const int64_t n = target.size(1) - 1;
  const Tensor target_in = target.narrow(1, 0, n).contiguous();
  const Tensor next = target.narrow(1, 1, n).contiguous();
  const Tensor target_out =
      masked_fill(next, compare(next, data::SpecialIds::pad, CompareOp::Eq), static_cast<double>(ignore_index));
  return {model.loss(source, target_in, target_out, compare(source, data::SpecialIds::pad, CompareOp::Eq)),
          target_out};
}

LossEstimate evaluate_doc2text_loss(LongNetEncoderDecoder& model, const std::shared_ptr<const data::TokenStore>& store,
                                    int64_t source_len, int64_t target_len, int64_t batch_size,
                                    int64_t max_examples) {
  LN_CHECK(batch_size >= 1 && max_examples >= 1, "[eval] batch size (", batch_size, ") and examples (", max_examples,
           ") must be positive");
  auto dataset = std::make_shared<data::DocToTextDataset>(store, source_len, target_len);
  const int64_t examples = std::min(max_examples, dataset->size());
  data::LoaderOptions lo;
  lo.batch_size = std::min(batch_size, examples);
  lo.shuffle = false;
  lo.prefetch = 0;
  lo.device = device_of(model);
  data::Loader loader(dataset, lo);
  // The loader makes whole batches only: the examples scored are a multiple of the batch size.
  const int64_t batches = examples / lo.batch_size;

  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t ignore = model.config().ignore_index;
  double weighted = 0.0;
  LossEstimate e;
  e.seq_len = source_len;
  for (int64_t i = 0; i < batches; ++i) {
    const Doc2TextLoss l = doc2text_loss(model, loader.next(), ignore);
    // cross_entropy is the mean over the batch's targets; weigh it by their count.
    const int64_t tokens = count_targets(l.targets, ignore);
    if (tokens > 0) weighted += l.out.cross_entropy.item() * static_cast<double>(tokens);
    e.tokens += tokens;
    e.windows += lo.batch_size;
  }
  model.train(was_training);
  LN_CHECK(e.tokens > 0, "[eval] the ", e.windows, " doc2text examples scored have no target token");
  e.loss = weighted / static_cast<double>(e.tokens);
  return e;
}

std::vector<PasskeyCell> evaluate_passkey(LongNetLM& model, const data::PasskeyTask& task,
                                          const std::vector<int64_t>& lengths, const std::vector<double>& depths,
                                          int samples, uint64_t seed) {
  const std::vector<data::PasskeyExample> examples = data::passkey_grid(task, lengths, depths, samples, seed);
  const bool was_training = model.is_training();
  model.eval();
  std::vector<PasskeyCell> cells;
  // One generate() call per cell: its prompts share a length, so they decode as one batch.
  for (size_t first = 0; first < examples.size(); first += static_cast<size_t>(samples)) {
    const data::PasskeyExample& head = examples[first];
    std::vector<std::vector<int64_t>> prompts;
    size_t answer_tokens = 0;
    for (size_t i = first; i < first + static_cast<size_t>(samples); ++i) {
      prompts.emplace_back(examples[i].prompt.begin(), examples[i].prompt.end());
      answer_tokens = std::max(answer_tokens, examples[i].answer.size());
    }
    GenerationConfig g;
    g.max_new_tokens = static_cast<int64_t>(answer_tokens) + 2;
    g.sampling.temperature = 0.0;
    const std::vector<GeneratedSequence> out = generate(model, prompts, g);
    PasskeyCell cell{head.length, head.depth, 0, static_cast<int64_t>(samples)};
    for (size_t i = 0; i < out.size(); ++i) {
      const std::vector<int32_t> tokens(out[i].tokens.begin(), out[i].tokens.end());
      if (data::passkey_correct(task.tokenizer(), examples[first + i], tokens)) ++cell.correct;
    }
    cells.push_back(cell);
  }
  model.train(was_training);
  return cells;
}

std::string format_loss_table(const std::vector<LossEstimate>& rows) {
  std::string out = "| length | loss | perplexity | tokens |\n|---:|---:|---:|---:|\n";
  for (const LossEstimate& e : rows) {
    out += "| " + std::to_string(e.seq_len) + " | " + format_number("%.4f", e.loss) + " | " +
           format_number("%.2f", e.perplexity()) + " | " + std::to_string(e.tokens) + " |\n";
  }
  return out;
}

std::string format_passkey_table(const std::vector<PasskeyCell>& cells) {
  std::vector<double> depths;
  std::map<int64_t, std::map<double, const PasskeyCell*>> grid;
  for (const PasskeyCell& c : cells) {
    if (std::find(depths.begin(), depths.end(), c.depth) == depths.end()) depths.push_back(c.depth);
    grid[c.length][c.depth] = &c;
  }
  std::string out = "| length |";
  std::string rule = "|---:|";
  for (double d : depths) {
    out += " depth " + format_number("%.2f", d) + " |";
    rule += "---:|";
  }
  out += "\n" + rule + "\n";
  for (const auto& [length, row] : grid) {
    out += "| " + std::to_string(length) + " |";
    for (double d : depths) {
      const auto it = row.find(d);
      out += it == row.end() ? " - |"
                             : " " + format_number("%.0f%%", 100.0 * it->second->accuracy()) + " (" +
                                   std::to_string(it->second->correct) + "/" + std::to_string(it->second->total) + ") |";
    }
    out += "\n";
  }
  return out;
}

nlohmann::json to_json(const LossEstimate& e) {
  return {{"length", e.seq_len}, {"loss", e.loss}, {"perplexity", e.perplexity()}, {"tokens", e.tokens},
          {"windows", e.windows}};
}

nlohmann::json to_json(const PasskeyCell& c) {
  return {{"length", c.length}, {"depth", c.depth}, {"correct", c.correct}, {"total", c.total},
          {"accuracy", c.accuracy()}};
}

}  // namespace longnet::tools
