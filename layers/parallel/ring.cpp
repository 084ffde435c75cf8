#include <thread>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/error.h"
#include "framework/ops/ops.h"
#include "layers/parallel/sequence_parallel.h"

namespace longnet {
namespace {

/// The global chunk indices a rank holds, in local order.
std::vector<int64_t> chunk_ids(int rank, int size, SequencePlacement placement) {
  if (placement == SequencePlacement::Zigzag) return {rank, 2 * int64_t{size} - 1 - rank};
  return {rank};
}

enum class Pair { Skip, Full, Diagonal };

/// What query chunk `qid` does with key chunk `kid`: under the causal mask later chunks are
/// hidden and the same chunk is causal within itself.
Pair pair_kind(int64_t qid, int64_t kid, bool causal) {
  if (!causal || kid < qid) return Pair::Full;
  return kid == qid ? Pair::Diagonal : Pair::Skip;
}

/// The geometry and options of one ring call, shared by forward and backward.
struct Ring {
  dist::Communicator* comm = nullptr;
  SequencePlacement placement = SequencePlacement::Contiguous;
  bool causal = false;
  std::optional<double> scale;
  std::vector<int64_t> ids;  // this rank's chunks
  int64_t chunk = 0;         // rows per chunk

  int next() const { return (comm->rank() + 1) % comm->size(); }
  int prev() const { return (comm->rank() + comm->size() - 1) % comm->size(); }
  Tensor rows(const Tensor& t, int64_t c) const { return t.defined() ? t.narrow(1, c * chunk, chunk) : t; }
  Tensor stats(const Tensor& t, int64_t c) const { return t.defined() ? t.narrow(2, c * chunk, chunk) : t; }

  /// Calls fn(query chunk, key chunk, params) for every visible pair with the keys of `src`.
  template <class F>
  void for_pairs(int src, F&& fn) const {
    const std::vector<int64_t> kids = chunk_ids(src, comm->size(), placement);
    for (size_t a = 0; a < ids.size(); ++a) {
      for (size_t b = 0; b < kids.size(); ++b) {
        const Pair kind = pair_kind(ids[a], kids[b], causal);
        if (kind == Pair::Skip) continue;
        AttentionParams params;
        params.scale = scale;
        params.causal = kind == Pair::Diagonal;
        fn(static_cast<int64_t>(a), static_cast<int64_t>(b), params);
      }
    }
  }

  /// Starts passing `t` to the next rank; the received block lands in the returned tensor.
  std::pair<Tensor, std::shared_ptr<dist::Work>> pass(const Tensor& t) const {
    Tensor got = Tensor::empty(t.shape(), t.dtype(), t.device());
    return {got, comm->send_recv_async(t, next(), got, prev())};
  }
};

/// Accumulates partial gradients in f32 for 16-bit inputs.
DType accumulator_dtype(DType t) { return is_reduced_float(t) ? DType::F32 : t; }

class RingBackward final : public autograd::Node {
 public:
  RingBackward(Ring ring, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse)
      : ring_(std::move(ring)), q_(q), k_(k), v_(v), out_(out), lse_(lse) {}
  std::string name() const override { return "RingAttentionBackward"; }
  bool zero_fills_missing_grads() const override { return false; }
  std::vector<Tensor> saved_tensors() const override { return {q_, k_, v_, out_, lse_}; }
  void release_saved() override { q_ = k_ = v_ = out_ = lse_ = Tensor(); }

  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    const Tensor dout = g[0].defined() ? g[0].contiguous() : zeros_like(out_);
    const Tensor dlse = g[1].defined() ? g[1].contiguous() : Tensor();
    const DType acc = accumulator_dtype(q_.dtype());
    const int p = ring_.comm->size();
    Tensor dq = zeros(q_.shape(), acc, q_.device());
    Tensor dk = zeros(k_.shape(), acc, k_.device()), dv = zeros(v_.shape(), acc, v_.device());
    Tensor k = k_, v = v_;
    for (int s = 0; s < p; ++s) {
      const int src = (ring_.comm->rank() - s + p) % p;
      std::pair<Tensor, std::shared_ptr<dist::Work>> kn, vn;
      if (s + 1 < p) {
        kn = ring_.pass(k);
        vn = ring_.pass(v);
      }
      ring_.for_pairs(src, [&](int64_t a, int64_t b, const AttentionParams& params) {
        const AttentionGrads grads =
            attention_backward(ring_.rows(q_, a), ring_.rows(k, b), ring_.rows(v, b), ring_.rows(out_, a),
                               ring_.stats(lse_, a), ring_.rows(dout, a), ring_.stats(dlse, a), params);
        add_(ring_.rows(dq, a), grads.dq.to(acc));
        add_(ring_.rows(dk, b), grads.dk.to(acc));
        add_(ring_.rows(dv, b), grads.dv.to(acc));
      });
      // The gradient of src's keys travels on with them and is home after p passes.
      if (p > 1) {
        auto dkn = ring_.pass(dk), dvn = ring_.pass(dv);
        dkn.second->wait();
        dvn.second->wait();
        dk = dkn.first;
        dv = dvn.first;
      }
      if (s + 1 < p) {
        kn.second->wait();
        vn.second->wait();
        k = kn.first;
        v = vn.first;
      }
    }
    return {dq.to(q_.dtype()), dk.to(k_.dtype()), dv.to(v_.dtype())};
  }

 private:
  Ring ring_;
  Tensor q_, k_, v_, out_, lse_;
};

}  // namespace

AttentionResult RingAttention::forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                       const AttentionOptions& options) {
  check_core_inputs("ring", q_in, k_in, v_in, options, false);
  dist::Communicator* comm = sequence_parallel_group();
  LN_CHECK(comm != nullptr, "[ring] no sequence-parallel group on this thread (open a SequenceParallelScope)");
  LN_CHECK(!options.key_padding_mask.defined(), "[ring] key padding is not supported");
  Ring ring;
  ring.comm = comm;
  ring.placement = sequence_placement();
  ring.causal = options.causal;
  ring.scale = scale_;
  ring.ids = chunk_ids(comm->rank(), comm->size(), ring.placement);
  const int64_t n = q_in.size(1), c = static_cast<int64_t>(ring.ids.size());
  LN_CHECK(n % c == 0, "[ring] zigzag placement needs an even local length, got ", n);
  ring.chunk = n / c;
  const Tensor q = q_in.contiguous(), k0 = k_in.contiguous(), v0 = v_in.contiguous();

  AttentionResult result;
  {
    NoGradGuard no_grad;
    const int p = comm->size();
    std::vector<AttentionOutput> acc(c);
    Tensor k = k0, v = v0;
    for (int s = 0; s < p; ++s) {
      // The next block is on its way while this one is computed.
      std::pair<Tensor, std::shared_ptr<dist::Work>> kn, vn;
      if (s + 1 < p) {
        kn = ring.pass(k);
        vn = ring.pass(v);
      }
      ring.for_pairs((comm->rank() - s + p) % p, [&](int64_t a, int64_t b, const AttentionParams& params) {
        AttentionOutput part = attention_forward(ring.rows(q, a), ring.rows(k, b), ring.rows(v, b), params);
        acc[a] = acc[a].out.defined() ? merge_attention({acc[a], part}) : part;
      });
      if (s + 1 < p) {
        kn.second->wait();
        vn.second->wait();
        k = kn.first;
        v = vn.first;
      }
    }
    std::vector<Tensor> outs, lses;
    for (const AttentionOutput& o : acc) {
      outs.push_back(o.out);
      lses.push_back(o.lse);
    }
    result.out = cat(outs, 1);
    result.lse = cat(lses, 2);
  }
  if (autograd::needs_grad({q, k0, v0})) {
    autograd::record(std::make_shared<RingBackward>(ring, q.detach(), k0.detach(), v0.detach(), result.out.detach(),
                                                    result.lse.detach()),
                     {q, k0, v0}, {result.out, result.lse});
  }
  return result;
}

}  // namespace longnet
