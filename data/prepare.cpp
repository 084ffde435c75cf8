#include "data/prepare.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "data/progress.h"
#include "data/random.h"
#include "data/rest_titles.h"
#include "data/token_store.h"
#include "data/tokenizer.h"
#include "framework/core/error.h"

namespace longnet::data {
namespace fs = std::filesystem;
namespace {

// Documents are read in batches of about this many bytes, tokenised in parallel, then written.
constexpr uint64_t kBatchBytes = uint64_t{8} << 20;

// One document on its way to a store.
struct Work {
  Document doc;
  bool validation = false;
  std::vector<int32_t> tokens, target;
  bool skip = false;  // doc2text: no title
};

// Runs fn(i) for i in [0, n) on `threads` threads; the first exception is rethrown.
template <class Fn>
void parallel_for(size_t n, int threads, Fn&& fn) {
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  auto worker = [&] {
    try {
      for (size_t i = next++; i < n; i = next++) fn(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
      next = n;
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads && static_cast<size_t>(t) < n; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

std::string describe_inputs(const PrepareOptions& o) {
  std::string s;
  for (const std::string& in : o.corpus.inputs) s += (s.empty() ? "" : ", ") + in;
  for (const std::string& suffix : o.corpus.suffixes) s += " *" + suffix;
  return s;
}

}  // namespace

double PrepareReport::mb_per_second() const {
  return seconds > 0 ? static_cast<double>(corpus.bytes_read) / 1e6 / seconds : 0.0;
}

double PrepareReport::documents_per_second() const {
  return seconds > 0 ? static_cast<double>(corpus.documents) / seconds : 0.0;
}

PrepareReport prepare_store(const PrepareOptions& o, std::ostream& log) {
  const auto start = std::chrono::steady_clock::now();
  LN_CHECK(o.task == "lm" || o.task == "doc2text", "[prepare] unknown task '", o.task,
           "' (expected lm or doc2text)");
  LN_CHECK(o.val_fraction >= 0 && o.val_fraction < 1, "[prepare] validation fraction ",
           o.val_fraction, " is outside [0, 1)");
  LN_CHECK(!o.output_dir.empty(), "[prepare] no output directory given");
  const Tokenizer tokenizer = Tokenizer::load(o.tokenizer);
  CorpusReader reader(o.corpus);

  // The validation set: the first k of a seeded permutation of the candidate documents.
  const int64_t candidates = reader.count_candidates();
  int64_t k = 0;
  if (o.val_fraction > 0 && candidates >= 2) {
    k = std::clamp<int64_t>(std::llround(o.val_fraction * static_cast<double>(candidates)), 1, candidates - 1);
  }
  std::optional<Permutation> split;
  if (k > 0) split.emplace(static_cast<uint64_t>(candidates), o.seed, static_cast<uint64_t>(RandomStream::kSplit));

  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  LN_CHECK(!ec, "[prepare] cannot create ", o.output_dir, ": ", ec.message());
  StoreHeader header;
  header.vocab_size = tokenizer.vocab_size();
  header.tokenizer_hash = tokenizer.hash();
  header.task = o.task;
  header.source = describe_inputs(o);
  const std::string train_path = (fs::path(o.output_dir) / kTrainStoreName).string();
  const std::string val_path = (fs::path(o.output_dir) / kValidationStoreName).string();
  TokenStoreWriter train(train_path, header);
  std::optional<TokenStoreWriter> val;
  if (k > 0) {
    header.split = "validation";
    val.emplace(val_path, header);
  }

  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::optional<ProgressBar> bar;
  if (o.progress) bar.emplace(log, "prepare", reader.total_bytes(), candidates, o.interactive);
  PrepareReport report;
  std::vector<Work> batch;
  bool more = true;
  while (more) {
    batch.clear();
    uint64_t bytes = 0;
    Work w;
    while (bytes < kBatchBytes && (more = reader.next(w.doc))) {
      w.validation = split && (*split)(static_cast<uint64_t>(w.doc.ordinal)) < static_cast<uint64_t>(k);
      bytes += w.doc.text.size();
      batch.push_back(std::move(w));
      w = Work();
    }
    parallel_for(batch.size(), threads, [&](size_t i) {
      Work& item = batch[i];
      if (o.task == "lm") {
        item.tokens = tokenizer.encode(item.doc.text);
        return;
      }
      const TitledText titled = split_rest_titles(item.doc.text);
      item.skip = titled.titles.empty();
      if (item.skip) return;
      std::string target;
      for (const std::string& t : titled.titles) target += (target.empty() ? "" : "\n") + t;
      item.tokens = tokenizer.encode(titled.body);
      item.target = tokenizer.encode(target);
    });
    for (Work& item : batch) {
      if (item.skip) {
        ++report.untitled_skipped;
        continue;
      }
      TokenStoreWriter& out = item.validation ? *val : train;
      if (o.task == "lm") {
        out.add_document(item.tokens);
      } else {
        out.add_pair(item.tokens, item.target);
      }
    }
    if (bar) bar->update(reader.stats().documents, reader.stats().bytes_read);
  }
  if (bar) bar->finish(reader.stats().documents, reader.stats().bytes_read);
  reader.require_documents();
  LN_CHECK(train.num_documents() > 0, "[prepare] no document is left for training (",
           val ? val->num_documents() : 0, " went to validation",
           report.untitled_skipped ? ", " + std::to_string(report.untitled_skipped) + " had no section title" : "",
           "): lower --val-fraction or add documents");
  train.commit();
  report.train = {train_path, train.num_documents(), train.num_tokens()};
  if (val && val->num_documents() > 0) {
    val->commit();
    report.validation = {val_path, val->num_documents(), val->num_tokens()};
  } else {
    // A validation store left by an earlier run would not match this training store.
    fs::remove(val_path, ec);
  }
  report.corpus = reader.stats();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace longnet::data
