#pragma once
// Incremental decoding: the per-layer KV cache that AttentionCore::decode reads and extends.
//
// A decoding step of any core gives exactly the row the core's causal forward gives at that
// position, because each core's decode visits the same keys with the same multiplicities:
//   dense         every cached key;
//   dilated       per branch (w, r) and head h, when the position's offset inside its segment of w
//                 rows is congruent to h mod r, the keys of the same segment at that residue;
//                 branches merged by log-sum-exp in the forward's order;
//   block_sparse  the key blocks the layout lists for the position's query block;
//   adaptive      the blocks the scorer picks with the forward's causal routing (pooled previous
//                 query block and the block's first row against pooled complete key blocks).
// Cost per step is O(keys visited): no score matrix over the whole cache is formed.
//
// Two routings depend on the length of the whole sequence, not only on the past: the adaptive
// core keeps round((1 - sparsity) * blocks) blocks and the block-sparse "random" pattern draws
// from streams numbered by the block count. The cache therefore routes as the forward over
// max_length() positions; decoding then equals that forward (for the other cores and patterns the
// result does not depend on max_length()).
#include <cstdint>
#include <memory>

#include "framework/core/tensor.h"

namespace longnet {

/// Keys and values of one causal self-attention layer, (B, length, H, D), kept in the kernel
/// dtype of the device (f32 on the CPU, the input's own dtype on the GPU). Storage grows
/// geometrically in multiples of `chunk` rows, up to max_length rows.
class KvCache {
 public:
  /// Core-specific decoding state (the adaptive core's routing inputs); created by the core.
  struct Extra {
    virtual ~Extra() = default;
  };

  /// A cache for up to `max_length` positions, growing `chunk` rows at a time at least.
  explicit KvCache(int64_t max_length, int64_t chunk = 256);

  /// Positions cached so far.
  int64_t length() const { return length_; }
  /// The most positions this cache may hold (and the length the routing of length-dependent
  /// cores follows).
  int64_t max_length() const { return max_length_; }
  /// Rows allocated.
  int64_t capacity() const { return keys_.defined() ? keys_.size(1) : 0; }
  /// (B, length, H, D) views of the cached keys and values; undefined before the first append.
  Tensor keys() const;
  Tensor values() const;
  /// The whole storage (B, capacity, H, D); rows from length() on are unspecified.
  const Tensor& key_storage() const { return keys_; }
  const Tensor& value_storage() const { return values_; }

  /// Appends k, v (B, n, H, D) at positions length() .. length() + n - 1; the first append fixes
  /// B, H, D, the dtype and the device. Throws past max_length() or for mismatching rows.
  void append(const Tensor& k, const Tensor& v);
  /// Forgets every position and the core state (storage is kept for reuse).
  void clear();

  /// The core state of type T, created empty on first use (a core keeps one type per cache).
  template <class T>
  T& extra() {
    if (!extra_) extra_ = std::make_unique<T>();
    T* e = dynamic_cast<T*>(extra_.get());
    if (e == nullptr) throw_extra_mismatch();
    return *e;
  }

 private:
  [[noreturn]] static void throw_extra_mismatch();
  void reserve(int64_t rows);

  int64_t max_length_, chunk_;
  int64_t length_ = 0;
  Tensor keys_, values_;
  std::unique_ptr<Extra> extra_;
};

}  // namespace longnet
