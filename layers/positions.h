#pragma once
// Relative positions by rotating q and k: RoPE (Su et al. 2021) and XPOS (Sun et al. 2022, the
// encoding LongNet and torchscale use). Both rotate each pair (x_2i, x_2i+1) of a head by the angle
// n * theta_i, theta_i = base^(-2i / D), so q_m . k_n depends on m - n only. XPOS also scales pair
// i of a query at position n by zeta_i^((n - c) / scale_base) and of a key by the inverse, with
// zeta_i = (2i + 0.4 D) / (1.4 D) < 1, so attention decays with distance: q_m . k_n carries
// zeta_i^((m - n) / scale_base). The centre c only keeps the factors in floating-point range (it
// cancels in q . k); torchscale centres each call on the middle of its sequence, here it is fixed
// so that keys cached during decoding and chunks of a split sequence stay consistent. One centre
// keeps f32 finite within about 70 scale_base of it (36K positions at scale_base 512): beyond,
// zeta_min^-power overflows. Attention that only pairs positions inside aligned blocks (dilated
// segments nested in the largest one) can give each block its own centre (center_period): the
// centres still cancel in every computed q . k, and any length stays finite.
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet {

/// The global positions of the rows of a sequence tensor: runs of consecutive positions in row
/// order. Usually one run from an offset (an integer converts to it); a rank of zigzag sequence
/// parallelism holds two pieces of the sequence, so two runs.
class Positions {
 public:
  /// Rows 0, 1, ... at positions offset, offset + 1, ...
  Positions(int64_t offset = 0) : offset_(offset) {}  // NOLINT(google-explicit-constructor): an offset is a Positions
  /// Rows in runs of (first position, rows); the rows of all runs make up the tensor's rows.
  static Positions runs(std::vector<std::pair<int64_t, int64_t>> runs);
  /// The first row's position.
  int64_t offset() const { return offset_; }
  /// The runs over `rows` rows (one run from the offset unless built with runs()); checks that
  /// the runs cover exactly `rows` rows.
  std::vector<std::pair<int64_t, int64_t>> over(int64_t rows) const;

 private:
  int64_t offset_ = 0;
  std::vector<std::pair<int64_t, int64_t>> runs_;  // empty: one run from offset_
};

/// Parameters of a rotary position encoding.
struct RotaryConfig {
  /// rope | xpos
  std::string kind = "xpos";
  int64_t head_dim = 64;
  /// Rotation frequencies theta_i = base^(-2i / head_dim).
  double base = 10000.0;
  /// XPOS: positions per unit exponent of the decay.
  double scale_base = 512.0;
  /// XPOS: the position whose scale is 1 (for example half the training length).
  int64_t center = 0;
  /// XPOS: when > 0, positions [k P, (k + 1) P) are centred on k P + P / 2 instead of `center`:
  /// exact for attention that never pairs positions of different blocks, finite at any length.
  int64_t center_period = 0;
};

/// Applies a rotary encoding to queries and keys (B, N, H, D). Stateless apart from a cache of the
/// last tables it built; safe to share between layers and threads.
class RotaryEmbedding {
 public:
  explicit RotaryEmbedding(const RotaryConfig& config);
  /// x (B, N, H, D) whose rows are at `positions` (offset, offset + 1, ... for an offset):
  /// rotated, and with XPOS scaled as a key (`is_key`) or a query. Differentiable; computed in f32
  /// for 16-bit inputs.
  Tensor apply(const Tensor& x, const Positions& positions, bool is_key) const;
  const RotaryConfig& config() const { return config_; }

  /// The factor pair i of a query (is_key false) or key at position n gets: rotation angle and
  /// scale (1 for RoPE). Exposed for references and tests.
  double angle(int64_t n, int64_t i) const;
  double scale(int64_t n, int64_t i, bool is_key) const;
  /// The XPOS centre of position n.
  int64_t center_of(int64_t n) const;

 private:
  struct Tables {
    int64_t n = -1, offset = 0;
    DType dtype = DType::F32;
    Device device;
    Tensor cos, sin;  // (N, D/2): cos and sin of the angle, times the scale
  };
  Tables tables(int64_t n, int64_t offset, bool is_key, DType dtype, Device device) const;
  /// One run: x's rows at offset, offset + 1, ...
  Tensor apply_run(const Tensor& x, int64_t offset, bool is_key) const;

  RotaryConfig config_;
  bool xpos_;
  mutable std::mutex mu_;
  mutable std::vector<Tables> cached_[2];  // the last query and key tables, a few runs each
};

}  // namespace longnet
