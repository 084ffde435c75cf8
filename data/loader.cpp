#include "data/loader.h"

#include "data/pinned_slots.h"
#include "data/random.h"
#include "framework/core/error.h"

namespace longnet::data {

// A batch prepared on the host: CPU tensors, or a pinned slot for a GPU.
struct Loader::Prepared {
  int64_t epoch = 0, batch = 0;
  std::vector<Tensor> cpu;
  int slot = -1;
};

const Tensor& Batch::field(std::string_view name) const {
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return fields[i];
  }
  std::string have;
  for (const std::string& n : names) have += (have.empty() ? "" : ", ") + n;
  LN_FAIL("[Batch] no field '", name, "' (fields: ", have, ")");
}

Tensor Batch::inputs() const {
  const Tensor& t = tokens();
  return t.narrow(1, 0, t.size(1) - 1).contiguous();
}

Tensor Batch::targets() const {
  const Tensor& t = tokens();
  return t.narrow(1, 1, t.size(1) - 1).contiguous();
}

nlohmann::json LoaderState::to_json() const {
  return {{"epoch", epoch},     {"batch", batch},           {"seed", seed},
          {"dp_rank", dp_rank}, {"dp_size", dp_size},       {"batch_size", batch_size},
          {"dataset_size", dataset_size}, {"shuffle", shuffle}};
}

LoaderState LoaderState::from_json(const nlohmann::json& j) {
  LoaderState s;
  try {
    j.at("epoch").get_to(s.epoch);
    j.at("batch").get_to(s.batch);
    j.at("seed").get_to(s.seed);
    j.at("dp_rank").get_to(s.dp_rank);
    j.at("dp_size").get_to(s.dp_size);
    j.at("batch_size").get_to(s.batch_size);
    j.at("dataset_size").get_to(s.dataset_size);
    j.at("shuffle").get_to(s.shuffle);
  } catch (const nlohmann::json::exception& e) {
    LN_FAIL("[Loader] invalid saved loader state ", j.dump(), ": ", e.what());
  }
  return s;
}

Loader::Loader(std::shared_ptr<const Dataset> dataset, LoaderOptions options)
    : dataset_(std::move(dataset)), options_(options) {
  LN_CHECK(dataset_, "[Loader] no dataset");
  LN_CHECK(options_.batch_size >= 1, "[Loader] batch size must be positive, got ", options_.batch_size);
  LN_CHECK(options_.dp_size >= 1 && options_.dp_rank >= 0 && options_.dp_rank < options_.dp_size,
           "[Loader] data-parallel rank ", options_.dp_rank, " is outside [0, ", options_.dp_size, ")");
  LN_CHECK(options_.prefetch >= 0, "[Loader] prefetch must be >= 0, got ", options_.prefetch);
  fields_ = dataset_->fields();
  const int64_t global = options_.batch_size * options_.dp_size;
  batches_per_epoch_ = dataset_->size() / global;
  LN_CHECK(batches_per_epoch_ > 0, "[Loader] the dataset has ", dataset_->size(),
           " examples, fewer than one global batch (batch size ", options_.batch_size, " x ",
           options_.dp_size, " data-parallel ranks = ", global, ")");
  if (options_.device.is_cuda()) {
    size_t bytes = 0;
    for (const FieldSpec& f : fields_) bytes += static_cast<size_t>(options_.batch_size * f.length) * sizeof(int64_t);
    pinned_ = std::make_unique<PinnedSlots>(options_.prefetch + 1, bytes, options_.device);
    for (int i = 0; i < pinned_->count(); ++i) free_slots_.push_back(i);
  }
  start_worker();
}

Loader::~Loader() { stop_worker(); }

int64_t Loader::example_index(int64_t epoch, int64_t batch, int64_t row) const {
  const int64_t global = (batch * options_.dp_size + options_.dp_rank) * options_.batch_size + row;
  if (!options_.shuffle) return global;
  const Permutation order(static_cast<uint64_t>(dataset_->size()), options_.seed, static_cast<uint64_t>(epoch));
  return static_cast<int64_t>(order(static_cast<uint64_t>(global)));
}

Loader::Prepared Loader::prepare(int64_t epoch, int64_t batch) {
  Prepared p;
  p.epoch = epoch;
  p.batch = batch;
  const int64_t b = options_.batch_size;
  std::vector<int64_t*> base;
  if (pinned_) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !free_slots_.empty(); });
      if (stop_) return p;
      p.slot = free_slots_.back();
      free_slots_.pop_back();
    }
    pinned_->wait_reusable(p.slot);
    auto* at = static_cast<int64_t*>(pinned_->data(p.slot));
    for (const FieldSpec& f : fields_) {
      base.push_back(at);
      at += b * f.length;
    }
  } else {
    for (const FieldSpec& f : fields_) {
      p.cpu.push_back(Tensor::empty({b, f.length}, DType::I64, Device::cpu()));
      base.push_back(p.cpu.back().data<int64_t>());
    }
  }
  std::vector<int64_t*> row(fields_.size());
  for (int64_t r = 0; r < b; ++r) {
    for (size_t f = 0; f < fields_.size(); ++f) row[f] = base[f] + r * fields_[f].length;
    dataset_->get(options_.seed, epoch, example_index(epoch, batch, r), row);
  }
  return p;
}

Batch Loader::deliver(Prepared&& p) {
  Batch out;
  out.epoch = p.epoch;
  out.index = p.batch;
  for (const FieldSpec& f : fields_) out.names.push_back(f.name);
  if (!pinned_) {
    out.fields = std::move(p.cpu);
    return out;
  }
  for (const FieldSpec& f : fields_) {
    out.fields.push_back(Tensor::empty({options_.batch_size, f.length}, DType::I64, options_.device));
  }
  pinned_->upload(p.slot, out.fields);
  {
    std::lock_guard<std::mutex> lock(mu_);
    free_slots_.push_back(p.slot);
  }
  cv_.notify_all();
  return out;
}

void Loader::worker_loop(int64_t epoch, int64_t batch) {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || static_cast<int>(ready_.size()) < options_.prefetch; });
      if (stop_) return;
    }
    try {
      Prepared p = prepare(epoch, batch);
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) {
        if (p.slot >= 0) free_slots_.push_back(p.slot);
        return;
      }
      ready_.push_back(std::move(p));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    cv_.notify_all();
    if (++batch == batches_per_epoch_) {
      batch = 0;
      ++epoch;
    }
  }
}

void Loader::start_worker() {
  if (options_.prefetch == 0) return;
  stop_ = false;
  worker_ = std::thread([this, e = epoch_, b = batch_] { worker_loop(e, b); });
}

void Loader::stop_worker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  for (Prepared& p : ready_) {
    if (p.slot >= 0) free_slots_.push_back(p.slot);
  }
  ready_.clear();
  error_ = nullptr;
}

Batch Loader::next() {
  Prepared p;
  if (options_.prefetch == 0) {
    p = prepare(epoch_, batch_);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !ready_.empty() || error_; });
    if (ready_.empty()) std::rethrow_exception(error_);
    p = std::move(ready_.front());
    ready_.pop_front();
  }
  cv_.notify_all();
  if (++batch_ == batches_per_epoch_) {
    batch_ = 0;
    ++epoch_;
  }
  return deliver(std::move(p));
}

LoaderState Loader::state() const {
  LoaderState s;
  s.epoch = epoch_;
  s.batch = batch_;
  s.seed = options_.seed;
  s.dp_rank = options_.dp_rank;
  s.dp_size = options_.dp_size;
  s.batch_size = options_.batch_size;
  s.dataset_size = dataset_->size();
  s.shuffle = options_.shuffle;
  return s;
}

void Loader::load_state(const LoaderState& s) {
  const LoaderState mine = state();
  auto require = [](bool same, const char* what, auto saved, auto here) {
    LN_CHECK(same, "[Loader] the saved position was taken with ", what, " ", saved,
             " but this loader has ", here, ": resume with the same data and settings");
  };
  require(s.seed == mine.seed, "seed", s.seed, mine.seed);
  require(s.dp_size == mine.dp_size, "dp_size", s.dp_size, mine.dp_size);
  require(s.dp_rank == mine.dp_rank, "dp_rank", s.dp_rank, mine.dp_rank);
  require(s.batch_size == mine.batch_size, "batch size", s.batch_size, mine.batch_size);
  require(s.dataset_size == mine.dataset_size, "a dataset of size", s.dataset_size, mine.dataset_size);
  require(s.shuffle == mine.shuffle, "shuffle", s.shuffle, mine.shuffle);
  LN_CHECK(s.epoch >= 0 && s.batch >= 0 && s.batch < batches_per_epoch_, "[Loader] saved position epoch ",
           s.epoch, " batch ", s.batch, " is outside an epoch of ", batches_per_epoch_, " batches");
  stop_worker();
  epoch_ = s.epoch;
  batch_ = s.batch;
  start_worker();
}

}  // namespace longnet::data
