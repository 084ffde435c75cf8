#pragma once
// Helpers of the trainer tests: quiet options, a temporary run area, a learnable token store and a
// tiny run config that trains in a fraction of a second per step on the CPU.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "data/token_store.h"
#include "tools/longnet/config.h"
#include "tools/longnet/trainer.h"

namespace longnet::tools::testing {

/// Options of a test run: nothing printed, no signal handlers.
inline TrainOptions quiet() {
  TrainOptions o;
  o.console = nullptr;
  o.handle_signals = false;
  return o;
}

/// A fresh directory under the system temp dir, removed on destruction.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag)
      : path_(std::filesystem::temp_directory_path() /
              ("longnet-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  std::filesystem::path path_;
};

/// Vocabulary of the patterned store.
inline constexpr int64_t kPatternVocab = 32;

/// A token store of documents that count upwards modulo 28 from varying starts (ids 4..31), so
/// the next token is predictable from the previous one and a model's loss falls quickly.
inline std::string write_pattern_store(const std::filesystem::path& path, int documents = 24, int length = 200) {
  data::StoreHeader h;
  h.vocab_size = kPatternVocab;
  h.tokenizer_hash = "pattern";
  data::TokenStoreWriter w(path.string(), h);
  for (int d = 0; d < documents; ++d) {
    std::vector<int32_t> doc;
    for (int i = 0; i < length; ++i) doc.push_back(4 + (d * 7 + i) % 28);
    w.add_document(doc);
  }
  w.commit();
  return path.string();
}

/// A doc2text store of 32 examples: source d is a run of 12 ids counting up (mod 28) from 4 + 5d,
/// its target the first title_tokens(d) of them (what an encoder-decoder can learn to copy).
inline std::string write_doc2text_store(const std::filesystem::path& path,
                                        const std::function<int(int)>& title_tokens) {
  data::StoreHeader h;
  h.vocab_size = kPatternVocab;
  h.tokenizer_hash = "pattern";
  h.task = "doc2text";
  data::TokenStoreWriter w(path.string(), h);
  for (int d = 0; d < 32; ++d) {
    std::vector<int32_t> source;
    for (int i = 0; i < 12; ++i) source.push_back(4 + (d * 5 + i) % 28);
    w.add_pair(source, std::vector<int32_t>(source.begin(), source.begin() + title_tokens(d)));
  }
  w.commit();
  return path.string();
}

/// A two-layer dilated decoder on `store`, run directory `run_dir`, CPU, no console output
/// files but metrics.jsonl.
inline RunConfig tiny_run_config(const std::string& store, const std::filesystem::path& run_dir, int64_t steps) {
  std::vector<std::string> args = {
      "--model.vocab_size", std::to_string(kPatternVocab), "--model.dim", "32", "--model.layers", "2",
      "--model.heads", "2", "--model.ffn_dim", "64", "--model.dropout", "0.1",
      "--attention.kind", "dilated", "--attention.segment_lengths", "8,16", "--attention.dilation_rates", "1,2",
      "--optimizer.lr", "3e-3", "--lr_scheduler.name", "cosine", "--lr_scheduler.warmup_steps", "1",
      "--training.steps", std::to_string(steps), "--training.batch_size", "2", "--training.seq_len", "16",
      "--training.grad_accum", "2", "--training.device", "cpu", "--training.seed", "7",
      "--training.log_every", "1", "--training.eval_every", "0",
      "--data.train", store, "--checkpoint.dir", run_dir.string(), "--checkpoint.every", "0",
      "--checkpoint.keep_last", "0", "--metrics.tensorboard=false", "--metrics.report=false"};
  return load_config(std::nullopt, args);
}

}  // namespace longnet::tools::testing
