#pragma once
// Evaluation of a language model: mean next-token loss (perplexity) over fixed windows of a token
// store at any length, and the passkey retrieval grid (length x depth); of an encoder-decoder: the
// mean target loss over the examples of a doc2text store. Runs without recording gradients, the
// model in eval mode.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/passkey.h"
#include "data/token_store.h"
#include "models/encoder_decoder.h"
#include "models/longnet_lm.h"

namespace longnet::tools {

/// Mean loss over the target tokens of some windows.
struct LossEstimate {
  int64_t seq_len = 0;
  double loss = 0.0;       // mean cross-entropy per target token (nats)
  int64_t tokens = 0;      // target tokens scored
  int64_t windows = 0;
  double perplexity() const;
};

/// The model is put in eval mode for the call and restored after.
/// Windows of `seq_len` + 1 tokens of `store` (seeded positions that do not depend on the model:
/// the same windows for every model and call), `batch_size` per forward, at most `max_windows`
/// windows (at least one batch). Throws when the store is shorter than one window.
LossEstimate evaluate_loss(LongNetLM& model, const std::shared_ptr<const data::TokenStore>& store,
                           int64_t seq_len, int64_t batch_size, int64_t max_windows);

/// An encoder-decoder's loss on a doc2text batch, and the targets it scored.
struct Doc2TextLoss {
  LossOutput out;
  Tensor targets;  // (B, T) the scored targets, ignore_index at padding
};
/// The loss on a batch of data::DocToTextDataset's fields "source" (B, M) and "target" (B, T + 1),
/// teacher-forced: target[:, :T] predicts target[:, 1:]. Padding is never a target (ignore_index
/// there) and never attended to in the source. What training and `longnet eval` compute.
Doc2TextLoss doc2text_loss(const LongNetEncoderDecoder& model, const data::Batch& batch, int64_t ignore_index);

/// Mean target cross-entropy per target token over the first `max_examples` examples of a doc2text
/// store (sources cut or padded to `source_len`, targets to `target_len`, as in training),
/// `batch_size` per forward. seq_len of the result is `source_len`, windows the examples scored.
/// The model is put in eval mode for the call and restored after.
LossEstimate evaluate_doc2text_loss(LongNetEncoderDecoder& model, const std::shared_ptr<const data::TokenStore>& store,
                                    int64_t source_len, int64_t target_len, int64_t batch_size,
                                    int64_t max_examples);

/// One cell of the passkey grid.
struct PasskeyCell {
  int64_t length = 0;
  double depth = 0.0;
  int64_t correct = 0;
  int64_t total = 0;
  double accuracy() const { return total > 0 ? static_cast<double>(correct) / static_cast<double>(total) : 0.0; }
};

/// Greedy answers to `samples` passkey prompts per (length, depth) cell; a cell is correct when
/// the first number generated is the passkey. Lengths outermost, as data::passkey_grid.
std::vector<PasskeyCell> evaluate_passkey(LongNetLM& model, const data::PasskeyTask& task,
                                          const std::vector<int64_t>& lengths, const std::vector<double>& depths,
                                          int samples, uint64_t seed);

/// A markdown table of perplexities: | length | loss | perplexity | tokens |.
std::string format_loss_table(const std::vector<LossEstimate>& rows);
/// A markdown table of passkey accuracy: one row per length, one column per depth.
std::string format_passkey_table(const std::vector<PasskeyCell>& cells);

/// JSON forms of the results (what `longnet eval` saves).
nlohmann::json to_json(const LossEstimate& e);
nlohmann::json to_json(const PasskeyCell& c);

}  // namespace longnet::tools
