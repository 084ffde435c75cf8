#pragma once
// Multi-head attention around any attention core: q/k/v projections, optional rotary positions
// (XPOS or RoPE) on q and k, the core chosen by registry name, MAGNETO's sub-LayerNorm before the
// output projection, and the output projection. Self- and cross-attention.
//
// A decoder with a KV cache either passes its own attention step (AttentionCall::attend, which
// receives the projected and rotated q, k, v of the new positions), or runs the public pieces
// itself: project_q and project_kv for the new positions, attention over the cache, project_out.
#include <functional>
#include <memory>
#include <string>

#include "layers/attention/core.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "layers/norm.h"
#include "layers/positions.h"

namespace longnet {

/// Shape and options of a MultiheadAttention.
struct MultiheadAttentionConfig {
  int64_t dim = 0;
  int64_t heads = 0;
  /// Width of the key/value source of cross-attention (0: dim).
  int64_t kv_dim = 0;
  bool bias = true;
  /// MAGNETO's sub-LN: a norm of the attention output before out_proj (`inner_attn_ln`).
  bool sub_ln = false;
  std::string norm = "layer_norm";
  double norm_eps = 0.0;  // <= 0: the norm's default
  /// The attention core (registry name) and its parameters; head_dim is set from dim / heads.
  std::string core = "dense";
  AttentionConfig attention;
  /// Xavier gains: q, k, v projections 1/sqrt(2) as torchscale initialises them, out_proj 1.
  double qkv_gain = 0.70710678118654752;
  double out_gain = 1.0;
};

/// Attention over projected q (B, N, H, D), k and v (B, Nk, H, D) in place of the layer's core.
using AttendFn = std::function<AttentionResult(const Tensor& q, const Tensor& k, const Tensor& v)>;

/// Per-call options of an attention layer.
struct AttentionCall {
  /// Query i sees only keys at positions <= its own (self-attention).
  bool causal = false;
  /// (B, Nk) bool, true where a key is padding; or undefined.
  Tensor key_padding_mask;
  /// Positions of the query rows (and, in self-attention, key rows): the rotation a chunk needs
  /// in decoding or sequence parallelism (an offset, or two runs for a zigzag rank).
  Positions positions;
  /// When set, runs instead of the core (causal and key_padding_mask are then its business): a
  /// decoder with a KV cache appends k, v and attends over the cache here.
  AttendFn attend;
  /// (B, N, dim) or undefined: added to the output in the out projection's product (the layer's
  /// skip, when no dropout stands between).
  Tensor residual;
};

/// The layer's output (B, N, dim) and the core's auxiliary loss (undefined when it has none).
struct AttentionLayerOutput {
  Tensor out;
  Tensor aux_loss;
};

/// Keys and values (B, Nk, H, D).
struct KeyValue {
  Tensor k, v;
};

/// Multi-head attention. Submodules q_proj, k_proj, v_proj, inner_attn_ln (sub-LN), out_proj,
/// and `core` holding the core's own parameters (the adaptive core's scorer), if any.
class MultiheadAttention : public Module {
 public:
  /// `positions` rotates q and k of self-attention; null for none (and for cross-attention).
  MultiheadAttention(const MultiheadAttentionConfig& config, Initializer& init,
                     std::shared_ptr<const RotaryEmbedding> positions = nullptr);
  std::string type_name() const override { return "MultiheadAttention"; }

  /// Self-attention over x (B, N, dim) when `memory` is undefined, else cross-attention from x to
  /// memory (B, Nk, kv_dim). -> (B, N, dim).
  AttentionLayerOutput forward(const Tensor& x, const Tensor& memory, const AttentionCall& call) const;

  /// Queries (B, N, H, D) of x (B, N, dim) at `positions` (offset, offset + 1, ... for an offset).
  Tensor project_q(const Tensor& x, const Positions& positions) const;
  /// Keys and values (B, Nk, H, D) of source (B, Nk, kv_dim) at positions offset, ... (positions
  /// rotate the keys only when this layer has them, i.e. in self-attention).
  KeyValue project_kv(const Tensor& source, const Positions& positions) const;
  /// The core's output (B, N, H, D) -> (B, N, dim): sub-LN (if any), then out_proj, plus
  /// `residual` (B, N, dim) in the projection's product when given.
  Tensor project_out(const Tensor& attention, const Tensor& residual = Tensor()) const;

  AttentionCore& core() const { return *core_; }
  const MultiheadAttentionConfig& config() const { return config_; }
  int64_t head_dim() const { return config_.dim / config_.heads; }
  /// The rotary encoding of q and k, or null.
  const std::shared_ptr<const RotaryEmbedding>& positions() const { return positions_; }

 private:
  Tensor split_heads(const Tensor& t) const;

  MultiheadAttentionConfig config_;
  std::shared_ptr<const RotaryEmbedding> positions_;
  std::shared_ptr<AttentionCore> core_;
  std::shared_ptr<Linear> q_proj_, k_proj_, v_proj_, out_proj_;
  std::shared_ptr<Norm> inner_attn_ln_;
};

}  // namespace longnet
