#include "tools/longnet/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/passkey.h"
#include "data/token_store.h"
#include "data/tokenizer.h"
#include "framework/core/error.h"
#include "framework/core/storage.h"
#include "framework/io/checkpoint_dir.h"
#include "framework/io/safetensors.h"
#include "framework/ops/ops.h"
#include "framework/autograd/grad_mode.h"
#include "framework/dist/reducer.h"
#include "layers/parallel/sequence_parallel.h"
#include "models/encoder_decoder.h"
#include "models/longnet_lm.h"
#include "models/summary.h"
#include "optim/clip.h"
#include "tools/longnet/metrics.h"
#include "tools/longnet/metrics_report.h"
#include "tools/longnet/model_flops.h"
#include "tools/longnet/trainer_dist.h"
#include "tools/longnet/trainer_eval.h"
#include "tools/longnet/trainer_setup.h"

#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/runtime.h"
#endif

namespace longnet::tools {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::atomic<int> g_stop_signal{0};

std::atomic<int64_t> g_stop_signal_ns{0};

// One stop request often arrives as several signals within moments: `timeout` signals the command
// and then its process group, and the --nproc-per-node spawner passes on what it receives. Those
// count as one request; a signal a while after the first means the user wants out now, so the
// default action (termination) runs. clock_gettime and raise are async-signal-safe.
extern "C" void record_stop_signal(int sig) {
  constexpr int64_t kSameRequestNs = 2'000'000'000;
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  const int64_t ns = static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
  if (g_stop_signal.load() == 0) {
    g_stop_signal_ns.store(ns);
    g_stop_signal.store(sig);
  } else if (ns - g_stop_signal_ns.load() > kSameRequestNs) {
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

// In-process ranks run train() on several threads at once, and handlers are process-wide: the
// first scope clears the flag and installs them, the last restores the previous ones.
std::mutex g_signals_mutex;
int g_signal_scopes = 0;
int g_signal_installs = 0;
struct sigaction g_old_int {};
struct sigaction g_old_term {};

// SIGINT and SIGTERM set the stop flag for the scope's lifetime; a second Ctrl-C, seconds later,
// ends a run that is stuck (record_stop_signal).
class StopSignals {
 public:
  explicit StopSignals(bool install) : installed_(install) {
    std::lock_guard<std::mutex> lock(g_signals_mutex);
    if (g_signal_scopes++ == 0) g_stop_signal.store(0);
    if (!installed_ || g_signal_installs++ > 0) return;
    struct sigaction sa {};
    sa.sa_handler = record_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &g_old_int);
    sigaction(SIGTERM, &sa, &g_old_term);
  }
  ~StopSignals() {
    std::lock_guard<std::mutex> lock(g_signals_mutex);
    --g_signal_scopes;
    if (!installed_ || --g_signal_installs > 0) return;
    sigaction(SIGINT, &g_old_int, nullptr);
    sigaction(SIGTERM, &g_old_term, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  bool installed_;
};

// What the run reads: training and validation examples of its task, and the tokenizer.
struct TrainData {
  std::shared_ptr<const data::Dataset> train;
  std::shared_ptr<const data::Dataset> valid;  // null without data.valid or evaluations
  std::string tokenizer_path;
  std::string tokenizer_hash;
};

std::shared_ptr<const data::TokenStore> open_store(const std::string& path, const char* key,
                                                   const std::optional<data::Tokenizer>& tokenizer, int64_t vocab) {
  LN_CHECK(!path.empty(), "[train] ", key, " is empty: name a token store made by `longnet prepare`");
  LN_CHECK(fs::exists(path), "[train] ", key, " = '", path, "' does not exist (make it with `longnet prepare`)");
  auto store = data::TokenStore::open(path);
  if (tokenizer) store->require_tokenizer(*tokenizer);
  LN_CHECK(store->info().header.vocab_size <= vocab, "[train] ", key, " = '", path, "' holds ids below ",
           store->info().header.vocab_size, " but model.vocab_size is ", vocab, "; set model.vocab_size to at least ",
           store->info().header.vocab_size);
  return store;
}

// The examples of data.task from a store; `examples` sizes the generated passkey sets.
std::shared_ptr<const data::Dataset> task_dataset(const RunConfig& c, std::shared_ptr<const data::TokenStore> store,
                                                  const std::optional<data::Tokenizer>& tokenizer, int64_t examples) {
  if (c.data.task == "passkey") {
    LN_CHECK(tokenizer.has_value(), "[train] data.task = \"passkey\" needs data.tokenizer (to write the prompts)");
    auto task = std::make_shared<data::PasskeyTask>(std::move(store), *tokenizer);
    return std::make_shared<data::PasskeyDataset>(task, c.training.seq_len, examples);
  }
  if (c.data.task == "doc2text") {
    LN_CHECK(store->info().header.task == "doc2text", "[train] data.task = \"doc2text\" needs a doc2text store (`longnet "
             "prepare --task doc2text`); ", store->info().path, " is a '", store->info().header.task, "' store");
    return std::make_shared<data::DocToTextDataset>(std::move(store), c.training.seq_len, c.data.target_len);
  }
  return std::make_shared<data::WindowDataset>(std::move(store), c.training.seq_len, data::WindowMode::kRandom);
}

TrainData open_data(const RunConfig& c) {
  TrainData d;
  std::optional<data::Tokenizer> tokenizer;
  if (!c.data.tokenizer.empty()) {
    LN_CHECK(fs::exists(c.data.tokenizer), "[train] data.tokenizer = '", c.data.tokenizer,
             "' does not exist (train one with `longnet tokenizer train`)");
    tokenizer = data::Tokenizer::load(c.data.tokenizer);
    d.tokenizer_path = c.data.tokenizer;
    d.tokenizer_hash = tokenizer->hash();
  }
  const TrainingSection& t = c.training;
  d.train = task_dataset(c, open_store(c.data.train, "data.train", tokenizer, c.model.vocab_size), tokenizer,
                         t.steps * t.batch_size * t.grad_accum);
  if (!c.data.valid.empty() && t.eval_every > 0) {
    d.valid = task_dataset(c, open_store(c.data.valid, "data.valid", tokenizer, c.model.vocab_size), tokenizer,
                           t.eval_batches * t.batch_size);
  }
  return d;
}

// Inputs and targets of an LM batch; with an answer mask only the answer tokens are targets.
std::pair<Tensor, Tensor> inputs_and_targets(const data::Batch& b, bool answer_mask, int64_t ignore_index) {
  Tensor targets = b.targets();
  if (answer_mask) {
    const Tensor& mask = b.field("answer_mask");
    const Tensor not_answer = compare(mask.narrow(1, 1, mask.size(1) - 1), 0.0, CompareOp::Eq);
    targets = masked_fill(targets, not_answer, static_cast<double>(ignore_index));
  }
  return {b.inputs(), targets};
}

// A task's loss on this rank's part of a batch, and the targets it scored (ignore_index where
// none), which weigh the ranks' losses into the global mean.
struct TaskLoss {
  LossOutput out;
  Tensor targets;
};

// The model a run trains and its loss on a batch of its task (the rank's rows, already on the
// device; language models take the rank's chunk of the sequence).
struct TrainModel {
  std::shared_ptr<Module> module;
  std::function<TaskLoss(const data::Batch&, const RankContext&)> loss;
  int64_t ignore_index = -100;
};

TrainModel make_train_model(const longnet::ModelConfig& mc, const std::string& task) {
  const int64_t ignore = mc.ignore_index;
  if (mc.kind == "encoder_decoder") {
    auto m = std::make_shared<LongNetEncoderDecoder>(mc);
    return {m,
            [m, ignore](const data::Batch& b, const RankContext&) -> TaskLoss {
              Doc2TextLoss l = doc2text_loss(*m, b, ignore);
              return {std::move(l.out), std::move(l.targets)};
            },
            ignore};
  }
  auto m = std::make_shared<LongNetLM>(mc);
  const bool answer_mask = task == "passkey";
  return {m,
          [m, answer_mask, ignore](const data::Batch& b, const RankContext& ctx) -> TaskLoss {
            const auto [inputs, targets] = inputs_and_targets(b, answer_mask, ignore);
            const Tensor in = ctx.sequence_part(inputs), tgt = ctx.sequence_part(targets);
            return {m->loss(in, tgt, ctx.positions(in.size(1))), tgt};
          },
          ignore};
}

// What this rank backpropagates for a micro-batch: its loss, weighted so that the ranks' average
// (what the gradient reducer computes) is the global batch's mean loss: a rank's mean over its
// targets counts by its share of the batch's targets (equal shares for language modelling).
Tensor rank_objective(const TrainModel& model, const data::Batch& global, const RankContext& ctx) {
  const TaskLoss t = model.loss(ctx.local_rows(global), ctx);
  if (!ctx.distributed()) return t.out.loss;
  const double mine = static_cast<double>(count_targets(t.targets, model.ignore_index));
  const double all = ctx.sum({mine})[0];
  Tensor objective = mul(t.out.cross_entropy, all > 0 ? mine * ctx.size() / all : 0.0);
  if (t.out.aux_loss.defined()) objective = add(objective, cast(t.out.aux_loss, objective.dtype()));
  return objective;
}

// Mean cross-entropy over the first `batches` global batches of the validation set (the same
// batches at every evaluation and at every world size), without recording and without dropout.
// The validation batch: the training batch size, cut to the examples there are and to a multiple
// of the data-parallel replicas. Checked before the first step too, so that a validation set too
// small for the replicas stops the run before it trains rather than at its first evaluation.
int64_t validation_batch_size(const data::Dataset& valid, int64_t batch_size, int64_t dp) {
  const int64_t b = std::min(batch_size, valid.size()) / dp * dp;
  LN_CHECK(b >= 1, "[train] data.valid holds ", valid.size(),
           " validation examples of this task, fewer than parallelism.data_parallel = ", dp,
           " (give a larger data.valid, or training.eval_every = 0 to train without evaluations)");
  return b;
}

double validation_loss(const TrainModel& model, const std::shared_ptr<const data::Dataset>& valid, int64_t batch_size,
                       int64_t batches, const RankContext& ctx, Device device) {
  data::LoaderOptions lo;
  lo.batch_size = validation_batch_size(*valid, batch_size, ctx.layout().dp);
  lo.shuffle = false;
  lo.prefetch = 0;
  lo.device = ctx.distributed() ? Device::cpu() : device;
  data::Loader loader(valid, lo);
  LN_CHECK(loader.batches_per_epoch() >= 1, "[train] data.valid holds no validation example of this task");
  NoGradGuard no_grad;
  model.module->eval();
  const int64_t n = std::min(batches, loader.batches_per_epoch());
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const TaskLoss t = model.loss(ctx.local_rows(loader.next()), ctx);
    const double loss = t.out.cross_entropy.item();
    if (!ctx.distributed()) {
      sum += loss;
      continue;
    }
    const double count = static_cast<double>(count_targets(t.targets, model.ignore_index));
    const std::vector<double> total = ctx.sum({loss * count, count});
    sum += total[1] > 0 ? total[0] / total[1] : 0.0;
  }
  model.module->train();
  return sum / static_cast<double>(n);
}

// Initial weights of a fine-tuning run: every tensor of the source checkpoint that the new model
// has (new tensors, such as an adaptive scorer, keep their initialisation).
void load_finetune_weights(const RunConfig& c, Module& model, Device device, ConsoleLine* console) {
  const fs::path source = resolve_checkpoint(c.training.finetune_from);
  const Module::LoadResult r =
      model.load_state_dict(io::load_safetensors((source / kModelFile).string(), device), /*strict=*/false);
  LN_CHECK(r.missing.size() < model.state_dict().size(), "[finetune] training.finetune_from = '",
           c.training.finetune_from, "': no tensor of ", source.string(), " matches this model");
  if (console) {
    std::string msg = "[finetune] weights from " + source.string();
    msg += r.missing.empty() ? " (every tensor)"
                             : "; " + std::to_string(r.missing.size()) + " new tensors keep their initialisation";
    if (!r.unexpected.empty()) msg += "; " + std::to_string(r.unexpected.size()) + " tensors of the source unused";
    console->message(msg);
  }
}

// Console messages go through the live line when there is one.
void say(ConsoleLine* console, const std::string& text) {
  if (console) console->message(text);
}

// NCCL moves GPU memory, the in-process backend CPU memory.
void check_world_device(const dist::Communicator& world, Device device) {
  if (world.backend() == "nccl") {
    LN_CHECK(device.is_cuda(), "[train] NCCL ranks train on GPUs (one per process), but training.device resolves to ",
             device.str(), "; set training.device to \"auto\" or \"cuda\"");
  } else {
    LN_CHECK(device.is_cpu(), "[train] the ", world.backend(), " backend moves CPU tensors only; set training.device "
             "to \"cpu\"");
  }
}

// The optimizer groups cut to the parameters this rank owns (ZeRO-1); `groups` list the
// parameters in the order the sharding numbers them.
std::vector<optim::ParamGroup> owned_groups(const std::vector<optim::ParamGroup>& groups,
                                            const dist::ParameterSharding& sharding, int rank) {
  std::vector<optim::ParamGroup> out;
  size_t index = 0;
  for (const optim::ParamGroup& g : groups) {
    optim::ParamGroup mine = g;
    mine.params.clear();
    mine.names.clear();
    for (size_t i = 0; i < g.params.size(); ++i, ++index) {
      if (sharding.owner(index) != rank) continue;
      mine.params.push_back(g.params[i]);
      mine.names.push_back(g.names[i]);
    }
    if (!mine.params.empty()) out.push_back(std::move(mine));
  }
  return out;
}

// The checkpoint every rank resumes from: rank 0's newest valid one (the others take its word
// rather than race a directory scan, and must see the same file system).
std::optional<io::CheckpointInfo> resume_point(const fs::path& run_dir, const RankContext& ctx) {
  std::optional<io::CheckpointInfo> newest;
  if (ctx.lead()) newest = io::newest_valid(run_dir);
  const int64_t step = ctx.broadcast(newest ? newest->step : -1);
  if (step < 0 || ctx.lead()) return newest;
  const io::CheckpointInfo info{step, run_dir / ("step-" + std::to_string(step))};
  LN_CHECK(fs::exists(info.path / io::kCheckpointManifest), "[train] rank ", ctx.rank(), " cannot see ",
           info.path.string(), ", which rank 0 resumes from: checkpoint.dir must be on a file system every rank shares");
  return info;
}

// "cpu", or "cuda:0 x 4 ranks (2 data-parallel x 2 sequence-parallel, dilated_parallel, ZeRO-1)".
std::string placement_text(const RankContext& ctx, Device device, const std::string& core, bool zero1) {
  if (!ctx.distributed()) return device.str();
  const ParallelLayout& l = ctx.layout();
  std::string text = device.str() + " x " + std::to_string(l.world) + " ranks (" + std::to_string(l.dp) +
                     " data-parallel x " + std::to_string(l.sp) + " sequence-parallel";
  if (l.sp > 1) text += ", " + core + " attention";
  return text + (zero1 ? ", ZeRO-1)" : ")");
}

}  // namespace

int stop_signal() { return g_stop_signal.load(); }

TrainResult train(const RunConfig& config, const TrainOptions& options) {
  const TrainingSection& t = config.training;
  const int world_size = options.world ? options.world->size() : 1;
  const ParallelLayout layout = parallel_layout(config, world_size);
  const Device device = resolve_device(t.device, options.local_rank);
  if (world_size > 1) check_world_device(*options.world, device);
  // Checkpoints name the single-process core, so that they load at any world size.
  const longnet::ModelConfig model_config = model_config_from_run(config, device);
  register_parallel_attention_cores();
  longnet::ModelConfig build_config = model_config;
  build_config.attention = parallel_attention_core(config, layout.sp);
  const RankContext ctx(options.world, layout, device);

  std::optional<ConsoleLine> console_line;
  if (options.console && ctx.lead()) console_line.emplace(options.console, options.console_tty);
  ConsoleLine* console = console_line ? &*console_line : nullptr;
  const bool tty = options.console_tty.value_or(options.console && ::isatty(::fileno(options.console)) != 0);

  TrainResult result;
  result.run_dir = config.checkpoint.dir;
  if (ctx.lead()) {
    fs::create_directories(result.run_dir);
    save_config(config, result.run_dir);
    if (options.print_config && options.console) {
      std::fprintf(options.console, "# effective config (saved to %s)\n%s\n",
                   (result.run_dir / kRunConfigFile).string().c_str(), format_config(config).c_str());
    }
  }

  const TrainData data = open_data(config);
  StopSignals signals(options.handle_signals);
  DefaultDeviceGuard device_guard(device);
  std::optional<SequenceParallelScope> sequence_scope;
  if (layout.sp > 1) sequence_scope.emplace(*ctx.mesh().sp, layout.placement);
  const TrainModel trained = make_train_model(build_config, config.data.task);
  Module& model = *trained.module;
  const std::optional<io::CheckpointInfo> resume = resume_point(result.run_dir, ctx);
  if (!resume && !t.finetune_from.empty()) load_finetune_weights(config, model, device, console);
  const int64_t frozen = freeze_lowest_layers(model, t.freeze_layers);

  const std::vector<optim::ParamGroup> groups =
      optim::make_param_groups(model.named_parameters(), config.optimizer.weight_decay,
                               optim::no_decay_by_name(config.optimizer.no_decay));
  std::vector<Tensor> trainable;
  for (const optim::ParamGroup& g : groups) trainable.insert(trainable.end(), g.params.begin(), g.params.end());
  const bool zero1 = config.parallelism.zero1 && ctx.distributed();
  std::optional<dist::ParameterSharding> sharding;
  if (zero1) sharding.emplace(ctx.world(), trainable);
  auto optimizer =
      optim::make_optimizer(optimizer_spec(config), zero1 ? owned_groups(groups, *sharding, ctx.rank()) : groups);
  std::optional<dist::GradientReducer> reducer;
  if (ctx.distributed()) {
    dist::ReducerOptions ro;
    ro.bucket_bytes = static_cast<size_t>(config.parallelism.bucket_mb * 1024.0 * 1024.0);
    reducer.emplace(ctx.world(), trainable, ro);
  }
  const optim::LrSchedule schedule = lr_schedule(config);
  const auto clear_grads = [&] {
    for (const Tensor& p : trainable) p.set_grad(Tensor());
  };

  // Every rank reads the same global batches (on the CPU when it keeps only a part of them).
  data::LoaderOptions lo;
  lo.batch_size = t.batch_size;
  lo.seed = static_cast<uint64_t>(t.seed);
  lo.device = ctx.distributed() ? Device::cpu() : device;
  data::Loader loader(data.train, lo);
  LN_CHECK(loader.batches_per_epoch() >= 1, "[train] data.train has ", data.train->size(),
           " windows of training.seq_len + 1 tokens, fewer than one batch of training.batch_size = ", t.batch_size);
  if (data.valid) validation_batch_size(*data.valid, t.batch_size, ctx.layout().dp);

  TrainerState state;
  state.tokenizer_hash = data.tokenizer_hash;
  manual_seed(static_cast<uint64_t>(t.seed));
  if (resume) {
    state = load_training_checkpoint(resume->path, model, *optimizer, device, zero1);
    LN_CHECK(state.tokenizer_hash == data.tokenizer_hash, "[train] the checkpoint ", resume->path.string(),
             " was trained with another tokenizer (hash ", state.tokenizer_hash.substr(0, 12), "...) than data.tokenizer (",
             data.tokenizer_hash.substr(0, 12), "...)");
    default_generator().set_state(state.rng);
    loader.load_state(data::LoaderState::from_json(state.loader));
    say(console, "[train] resumed from " + resume->path.string() + " at step " + std::to_string(state.step));
  }
  default_generator().set_state(rank_stream(default_generator().state(), ctx.rank()));
  result.start_step = state.step;

  const int64_t params = model.parameter_count();
  const int64_t tokens_per_step = t.batch_size * t.seq_len * t.grad_accum;  // over all ranks
  const double flops_per_step = training_step_flops(model_config, params, t.batch_size * t.grad_accum, t.seq_len);
  say(console, "[train] " + model_config.attention + " LongNet, " + std::to_string(params) + " parameters" +
                   (frozen > 0 ? " (" + std::to_string(frozen) + " tensors frozen)" : "") + ", on " +
                   placement_text(ctx, device, build_config.attention, zero1) + ", " + std::to_string(tokens_per_step) +
                   " tokens per update, run directory " + result.run_dir.string());

  std::optional<MetricsLogger> logger;
  if (ctx.lead()) logger.emplace(result.run_dir, config.metrics.jsonl, config.metrics.tensorboard, state.step);
  const auto now_seconds = [] {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  };
  const auto save = [&] {
    const optim::OptimizerState opt =
        zero1 ? gather_optimizer_state(ctx.world(), *optimizer, device) : optimizer->state_dict();
    if (ctx.lead()) {
      state.rng = default_generator().state();
      state.loader = loader.state().to_json();
      result.last_checkpoint = save_training_checkpoint(
          result.run_dir, {model, model_config, opt, state, config, data.tokenizer_path}, options.on_checkpoint_file);
      io::prune_checkpoints(result.run_dir, config.checkpoint.keep_last);
      say(console, "[train] saved " + result.last_checkpoint.string());
    } else {
      result.last_checkpoint = result.run_dir / ("step-" + std::to_string(state.step));
    }
    // No rank runs ahead of a checkpoint it might be asked to resume from.
    ctx.barrier();
  };
  const auto evaluate = [&] {
    const double loss = validation_loss(trained, data.valid, t.batch_size, t.eval_batches, ctx, device);
    result.valid_loss = loss;
    if (logger) logger->log({state.step, "valid", now_seconds(), {{"loss", loss}, {"perplexity", std::exp(loss)}}});
    char buf[128];
    std::snprintf(buf, sizeof buf, "[eval] step %lld: valid loss %.4f, perplexity %.2f",
                  static_cast<long long>(state.step), loss, std::exp(loss));
    say(console, buf);
  };
  // A signal stops every rank after the same update: the ranks pool what they received.
  const auto stop_requested = [&] { return ctx.sum({stop_signal() != 0 ? 1.0 : 0.0})[0] > 0.0; };

  // Train-metric window since the last log line.
  double window_loss = 0.0;
  int64_t window_updates = 0, window_tokens = 0;
  Clock::time_point window_start = Clock::now();
  int64_t saved_step = resume ? state.step : -1, evaluated_step = -1;
  model.train();
  while (state.step < t.steps && !stop_requested()) {
    double loss_sum = 0.0;
    for (int64_t micro = 0; micro < t.grad_accum; ++micro) {
      Tensor loss = rank_objective(trained, loader.next(), ctx);
      loss_sum += loss.item();
      if (t.grad_accum > 1) loss = mul(loss, 1.0 / static_cast<double>(t.grad_accum));
      // Gradients travel once per update, during the last micro-batch's backward.
      if (reducer) reducer->set_sync(micro + 1 == t.grad_accum);
      loss.backward();
    }
    if (reducer) reducer->finish();
    const double loss = ctx.sum({loss_sum / static_cast<double>(t.grad_accum)})[0] / ctx.size();
    // Every rank holds the same averaged gradients, hence the same norm and the same verdict.
    const double grad_norm = optim::clip_grad_norm_(trainable, config.optimizer.clip_grad_norm);
    const double lr = schedule.at(state.step);
    ++state.step;
    state.tokens_seen += tokens_per_step;
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      clear_grads();
      ++state.skipped_steps;
      ++state.consecutive_bad;
      say(console, "[train] step " + std::to_string(state.step) + ": non-finite " +
                       (std::isfinite(loss) ? "gradient norm" : "loss") + ", update skipped (" +
                       std::to_string(state.consecutive_bad) + " in a row, " + std::to_string(state.skipped_steps) +
                       " in all)");
      LN_CHECK(state.consecutive_bad <= t.max_bad_steps, "[train] ", state.consecutive_bad,
               " non-finite steps in a row at step ", state.step, " (training.max_bad_steps = ", t.max_bad_steps,
               "): the loss or gradients overflow. Lower optimizer.lr, raise lr_scheduler.warmup_steps or check "
               "the data; the last good checkpoint is kept in ",
               result.run_dir.string());
    } else {
      state.consecutive_bad = 0;
      optimizer->set_lr(lr);
      optimizer->step();
      if (sharding) sharding->sync_parameters();
      clear_grads();
      window_loss += loss;
      ++window_updates;
    }
    window_tokens += tokens_per_step;
    result.losses.emplace_back(state.step, loss);

    const bool last = state.step == t.steps;
    if (ctx.lead() && (state.step % t.log_every == 0 || last || tty)) {
      const double seconds = std::chrono::duration<double>(Clock::now() - window_start).count();
      Progress p;
      p.step = state.step;
      p.total_steps = t.steps;
      p.loss = window_updates > 0 ? window_loss / static_cast<double>(window_updates) : loss;
      p.lr = lr;
      p.grad_norm = grad_norm;
      p.tokens_per_s = seconds > 0 ? static_cast<double>(window_tokens) / seconds : 0.0;
      if (device.is_cuda()) {
        // Per GPU: the run's model FLOPs rate over the peak of all its GPUs.
        p.mfu = *p.tokens_per_s / static_cast<double>(tokens_per_step) * flops_per_step /
                (kPeakBf16Tflops * 1e12 * ctx.size());
        p.memory_bytes = memory_stats(device).peak_bytes;
      }
      if (console) console->update(p);
      if (state.step % t.log_every == 0 || last) {
        MetricsRecord r{state.step, "train", now_seconds(),
                        {{"loss", *p.loss}, {"lr", lr}, {"grad_norm", grad_norm}, {"tokens_per_s", *p.tokens_per_s}}};
        if (p.mfu) r.values.emplace_back("mfu", *p.mfu);
        if (p.memory_bytes) r.values.emplace_back("memory_bytes", static_cast<double>(*p.memory_bytes));
        r.values.emplace_back("skipped_steps", static_cast<double>(state.skipped_steps));
        logger->log(r);
        window_loss = 0.0;
        window_updates = 0;
        window_tokens = 0;
        window_start = Clock::now();
        if (device.is_cuda()) reset_peak_memory(device);
      }
    }
    if (data.valid && state.step % t.eval_every == 0) {
      evaluate();
      evaluated_step = state.step;
    }
    if (config.checkpoint.every > 0 && state.step % config.checkpoint.every == 0) {
      save();
      saved_step = state.step;
    }
    if (options.on_step) options.on_step(state.step, loss);
  }
  result.interrupted = state.step < t.steps;
  if (result.interrupted) {
    const int sig = stop_signal();
    say(console, std::string("[train] ") +
                     (sig == 0 ? "a stop signal on another rank" : sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                     " at step " + std::to_string(state.step) +
                     ": saving a checkpoint; run the same command again to resume");
  } else if (data.valid && evaluated_step != state.step) {
    evaluate();
  }
  if (saved_step != state.step) save();
  if (console) console->finish();
  result.end_step = state.step;
  result.skipped_steps = state.skipped_steps;
  if (ctx.lead() && config.metrics.report && config.metrics.jsonl && !result.interrupted) {
    say(console, "[train] report: " + write_report(result.run_dir).string());
  }
  return result;
}

}  // namespace longnet::tools
