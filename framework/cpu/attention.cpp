#include "framework/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <cblas.h>
#include <omp.h>

#include "framework/core/error.h"

namespace longnet::cpu {
namespace {

// Rows per query tile and per key tile when no layout fixes the block size: a 64 x 64 score tile
// and the matching rows of q, k, v stay in L2 for head dims up to 128.
constexpr int64_t kTile = 64;

template <class T>
constexpr T kNegInf = -std::numeric_limits<T>::infinity();

// Element offset of flattened batch index `bt` in a view.
int64_t batch_offset(const AttentionShape& s, const AttentionView& v, int64_t bt) {
  int64_t off = 0;
  for (int i = s.batch_dims - 1; i >= 0; --i) {
    off += bt % s.batch_sizes[i] * v.batch[i];
    bt /= s.batch_sizes[i];
  }
  return off;
}

// Which key tiles each query tile visits and the reverse, for one call. Tiles are layout blocks
// when there is a layout; tile pairs the causal mask hides entirely are never visited.
class Tiling {
 public:
  Tiling(const AttentionShape& s, const AttentionMask& m, bool need_reverse) : s_(s), m_(m) {
    tile_ = m.layout.block > 0 ? m.layout.block : kTile;
    q_tiles_ = (s.q_len + tile_ - 1) / tile_;
    k_tiles_ = (s.k_len + tile_ - 1) / tile_;
    if (need_reverse && m.layout.block > 0) build_reverse();
  }

  int64_t tile() const { return tile_; }
  int64_t q_tiles() const { return q_tiles_; }
  int64_t k_tiles() const { return k_tiles_; }

  // Calls f(kt, entry) for every key tile query tile qt of (bt, h) visits; entry is the layout
  // entry (index into key_blocks, for the block bias) or -1 without a layout.
  template <class F>
  void for_key_tiles(int64_t bt, int64_t h, int64_t qt, F&& f) const {
    if (m_.layout.block == 0) {
      for (int64_t kt = 0; kt < k_tiles_; ++kt) {
        if (visible(qt, kt)) f(kt, int64_t{-1});
      }
      return;
    }
    const int64_t r = (group(bt, h)) * m_.layout.q_blocks + qt;
    for (int64_t e = m_.layout.row_offsets[r]; e < m_.layout.row_offsets[r + 1]; ++e) {
      if (visible(qt, m_.layout.key_blocks[e])) f(m_.layout.key_blocks[e], e);
    }
  }

  // Calls f(qt, entry) for every query tile of (bt, h) that visits key tile kt.
  template <class F>
  void for_query_tiles(int64_t bt, int64_t h, int64_t kt, F&& f) const {
    if (m_.layout.block == 0) {
      for (int64_t qt = 0; qt < q_tiles_; ++qt) {
        if (visible(qt, kt)) f(qt, int64_t{-1});
      }
      return;
    }
    const int64_t c = group(bt, h) * k_tiles_ + kt;
    for (int64_t i = col_offsets_[c]; i < col_offsets_[c + 1]; ++i) {
      if (visible(col_rows_[i], kt)) f(col_rows_[i], col_entries_[i]);
    }
  }

 private:
  // The layout's (batch, head) group of (bt, h).
  int64_t group(int64_t bt, int64_t h) const {
    const int64_t lb = m_.layout.batch == 1 ? 0 : bt;
    const int64_t lh = m_.layout.heads == 1 ? 0 : h;
    return lb * m_.layout.heads + lh;
  }

  // False when the causal mask hides every pair of the two tiles.
  bool visible(int64_t qt, int64_t kt) const {
    if (!m_.causal) return true;
    const int64_t last_query = std::min(s_.q_len, (qt + 1) * tile_) - 1;
    return kt * tile_ <= last_query + m_.causal_offset;
  }

  // The layout transposed (per group, for each key block the query blocks listing it), so that
  // the dk/dv pass can own a key tile.
  void build_reverse() {
    const AttentionLayoutView& l = m_.layout;
    const int64_t groups = l.batch * l.heads;
    col_offsets_.assign(static_cast<size_t>(groups * k_tiles_ + 1), 0);
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t e = l.row_offsets[g * l.q_blocks]; e < l.row_offsets[(g + 1) * l.q_blocks]; ++e) {
        ++col_offsets_[static_cast<size_t>(g * k_tiles_ + l.key_blocks[e] + 1)];
      }
    }
    for (size_t c = 1; c < col_offsets_.size(); ++c) col_offsets_[c] += col_offsets_[c - 1];
    col_rows_.resize(static_cast<size_t>(col_offsets_.back()));
    col_entries_.resize(col_rows_.size());
    std::vector<int64_t> fill(col_offsets_.begin(), col_offsets_.end() - 1);
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t qb = 0; qb < l.q_blocks; ++qb) {
        const int64_t r = g * l.q_blocks + qb;
        for (int64_t e = l.row_offsets[r]; e < l.row_offsets[r + 1]; ++e) {
          const auto at = static_cast<size_t>(fill[static_cast<size_t>(g * k_tiles_ + l.key_blocks[e])]++);
          col_rows_[at] = qb;
          col_entries_[at] = e;
        }
      }
    }
  }

  const AttentionShape& s_;
  const AttentionMask& m_;
  int64_t tile_ = 0, q_tiles_ = 0, k_tiles_ = 0;
  std::vector<int64_t> col_offsets_, col_rows_, col_entries_;
};

// Per-thread scratch for one tile pair.
template <class T>
struct Scratch {
  Scratch(int64_t tile, int64_t d)
      : s(static_cast<size_t>(tile * tile)), dp(s.size()), acc(static_cast<size_t>(tile * d)), acc2(acc.size()),
        row(static_cast<size_t>(tile)), row2(row.size()) {}
  std::vector<T> s, dp, acc, acc2, row, row2;
};

// c = alpha * op(a) @ op(b) + beta * c, row-major, on the calling thread (BLAS is kept at one
// thread: the tiles are already spread over the OpenMP threads).
template <class T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc) {
  const auto fa = ta ? CblasTrans : CblasNoTrans, fb = tb ? CblasTrans : CblasNoTrans;
  const auto bm = static_cast<blasint>(m), bn = static_cast<blasint>(n), bk = static_cast<blasint>(k);
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, fa, fb, bm, bn, bk, alpha, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb),
                beta, c, static_cast<blasint>(ldc));
  } else {
    cblas_dgemm(CblasRowMajor, fa, fb, bm, bn, bk, alpha, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb),
                beta, c, static_cast<blasint>(ldc));
  }
}

// s (ni, nj) = scale * x (ni, D; row stride xs) @ y (nj, D; row stride ys)^T.
template <class T>
void tile_dots(const T* x, int64_t xs, const T* y, int64_t ys, int64_t ni, int64_t nj, int64_t d, T scale, T* s) {
  gemm(false, true, ni, nj, d, scale, x, xs, y, ys, T(0), s, nj);
}

// acc (ni, D) += p (ni, nj) @ y (nj, D; row stride ys).
template <class T>
void add_product(const T* p, int64_t ni, int64_t nj, const T* y, int64_t ys, int64_t d, T* acc) {
  gemm(false, false, ni, d, nj, T(1), p, nj, y, ys, T(1), acc, d);
}

// acc (nj, D) += p (ni, nj)^T @ x (ni, D; row stride xs).
template <class T>
void add_product_t(const T* p, int64_t ni, int64_t nj, const T* x, int64_t xs, int64_t d, T* acc) {
  gemm(true, false, nj, d, ni, T(1), p, nj, x, xs, T(1), acc, d);
}

// BLAS must run single-threaded inside the OpenMP regions; set once from the calling thread.
void single_threaded_blas() {
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

// Writes (or adds) scale * src (n, D) into rows of a strided output.
template <class T>
void store_rows(const T* src, int64_t n, int64_t d, T scale, T* dst, int64_t ds, bool accumulate) {
  for (int64_t i = 0; i < n; ++i) {
    T* di = dst + i * ds;
    const T* si = src + i * d;
    if (accumulate) {
      for (int64_t c = 0; c < d; ++c) di[c] += scale * si[c];
    } else {
      for (int64_t c = 0; c < d; ++c) di[c] = scale * si[c];
    }
  }
}

// The operands of one (batch, head) slice, already offset, with the masking rules.
template <class T>
struct HeadSlice {
  HeadSlice(const AttentionShape& s, const AttentionMask& m, int64_t bt, int64_t h)
      : shape(s), mask(m), d(s.head_dim), scale(static_cast<T>(m.scale)) {
    const AttentionView& kp = m.key_padding;
    padding = kp.data ? static_cast<const uint8_t*>(kp.data) + batch_offset(s, kp, bt) : nullptr;
    padding_stride = kp.row;
    bias = static_cast<const T*>(m.block_bias);
  }

  // Base pointer of operand `v` at this slice (row 0).
  static T* at(const AttentionShape& s, const AttentionView& v, int64_t bt, int64_t h) {
    return v.data ? static_cast<T*>(v.data) + batch_offset(s, v, bt) + h * v.head : nullptr;
  }

  // s (ni, nj) = scaled scores of query rows [i0, i0 + ni) against keys [j0, j0 + nj) plus the
  // block bias; hidden pairs are -inf.
  void scores(const T* q, int64_t qs, const T* k, int64_t ks, int64_t i0, int64_t ni, int64_t j0, int64_t nj,
              int64_t entry, Scratch<T>& w) const {
    T* s = w.s.data();
    tile_dots(q + i0 * qs, qs, k + j0 * ks, ks, ni, nj, d, scale, s);
    const T b = entry >= 0 && bias ? bias[entry] : T(0);
    for (int64_t i = 0; i < ni; ++i) {
      T* si = s + i * nj;
      if (b != T(0)) {
        for (int64_t j = 0; j < nj; ++j) si[j] += b;
      }
      if (mask.causal) {
        const int64_t last = i0 + i + mask.causal_offset - j0;  // last visible key of this row, tile-relative
        for (int64_t j = std::max<int64_t>(last + 1, 0); j < nj; ++j) si[j] = kNegInf<T>;
      }
      if (padding) {
        for (int64_t j = 0; j < nj; ++j) {
          if (padding[(j0 + j) * padding_stride]) si[j] = kNegInf<T>;
        }
      }
    }
  }

  const AttentionShape& shape;
  const AttentionMask& mask;
  int64_t d;
  T scale;
  const uint8_t* padding = nullptr;
  int64_t padding_stride = 0;
  const T* bias = nullptr;
};

// Runs body(task, scratch) for task in [0, n) over OpenMP threads, one scratch per thread;
// dynamic scheduling because causal and sparse tiles differ in work.
template <class T, class F>
void parallel_tasks(int64_t n, int64_t tile, int64_t d, F&& body) {
#pragma omp parallel if (n > 1)
  {
    Scratch<T> scratch(tile, d);
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < n; ++t) body(t, scratch);
  }
}

template <class T>
void forward_impl(const AttentionForwardParams& p) {
  const AttentionShape& s = p.shape;
  const Tiling tiling(s, p.mask, false);
  const int64_t tile = tiling.tile(), d = s.head_dim;
  const int64_t tasks = s.batch() * s.heads * tiling.q_tiles();
  parallel_tasks<T>(tasks, tile, d, [&](int64_t t, Scratch<T>& w) {
    const int64_t qt = t % tiling.q_tiles(), h = t / tiling.q_tiles() % s.heads;
    const int64_t bt = t / tiling.q_tiles() / s.heads;
    const HeadSlice<T> hs(s, p.mask, bt, h);
    const T* q = HeadSlice<T>::at(s, p.q, bt, h);
    const T* k = HeadSlice<T>::at(s, p.k, bt, h);
    const T* v = HeadSlice<T>::at(s, p.v, bt, h);
    const int64_t i0 = qt * tile, ni = std::min(tile, s.q_len - i0);
    T* m = w.row.data();
    T* l = w.row2.data();
    std::fill(m, m + ni, kNegInf<T>);
    std::fill(l, l + ni, T(0));
    std::fill(w.acc.begin(), w.acc.begin() + ni * d, T(0));
    tiling.for_key_tiles(bt, h, qt, [&](int64_t kt, int64_t entry) {
      const int64_t j0 = kt * tile, nj = std::min(tile, s.k_len - j0);
      hs.scores(q, p.q.row, k, p.k.row, i0, ni, j0, nj, entry, w);
      // Online softmax: rescale the running sums to the new row maximum, then add this tile.
      for (int64_t i = 0; i < ni; ++i) {
        T* si = w.s.data() + i * nj;
        T mx = kNegInf<T>;
        for (int64_t j = 0; j < nj; ++j) mx = std::max(mx, si[j]);
        if (mx == kNegInf<T>) {
          std::fill(si, si + nj, T(0));
          continue;
        }
        const T m_new = std::max(m[i], mx);
        const T alpha = std::exp(m[i] - m_new);
        T sum = 0;
        for (int64_t j = 0; j < nj; ++j) {
          si[j] = std::exp(si[j] - m_new);
          sum += si[j];
        }
        l[i] = l[i] * alpha + sum;
        m[i] = m_new;
        if (alpha != T(1)) {
          T* ai = w.acc.data() + i * d;
          for (int64_t c = 0; c < d; ++c) ai[c] *= alpha;
        }
      }
      add_product(w.s.data(), ni, nj, v + j0 * p.v.row, p.v.row, d, w.acc.data());
    });
    T* out = HeadSlice<T>::at(s, p.out, bt, h);
    T* lse = HeadSlice<T>::at(s, p.lse, bt, h);
    for (int64_t i = 0; i < ni; ++i) {
      T* oi = out + (i0 + i) * p.out.row;
      const T* ai = w.acc.data() + i * d;
      const bool empty = l[i] == T(0);
      const T inv = empty ? T(0) : T(1) / l[i];
      for (int64_t c = 0; c < d; ++c) oi[c] = ai[c] * inv;
      lse[(i0 + i) * p.lse.row] = empty ? kNegInf<T> : m[i] + std::log(l[i]);
    }
  });
}

// The backward of one tile pair up to the score gradients: w.s = P = exp(S - L) (the final
// probabilities) and w.dp = dS = P * (dO V^T - Delta), where Delta_i = rowsum(dO o O)_i - dL_i.
template <class T>
struct BackwardTile {
  const AttentionBackwardParams& p;
  const HeadSlice<T>& hs;
  const T *q, *k, *v, *dout, *lse, *delta;
  int64_t lse_stride;

  void operator()(int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t entry, Scratch<T>& w) const {
    hs.scores(q, p.q.row, k, p.k.row, i0, ni, j0, nj, entry, w);
    tile_dots(dout + i0 * p.dout.row, p.dout.row, v + j0 * p.v.row, p.v.row, ni, nj, hs.d, T(1), w.dp.data());
    for (int64_t i = 0; i < ni; ++i) {
      T* si = w.s.data() + i * nj;
      T* dpi = w.dp.data() + i * nj;
      const T li = lse[(i0 + i) * lse_stride];
      const T di = delta[i0 + i];
      for (int64_t j = 0; j < nj; ++j) {
        // Masked scores and rows that see nothing (L = -inf) carry no probability.
        si[j] = si[j] == kNegInf<T> || li == kNegInf<T> ? T(0) : std::exp(si[j] - li);
        dpi[j] = si[j] * (dpi[j] - di);
      }
    }
  }
};

template <class T>
void backward_impl(const AttentionBackwardParams& p) {
  const AttentionShape& s = p.shape;
  const bool need_kv = p.dk.data || p.dv.data;
  const bool need_q = p.dq.data || p.block_bias_grad;
  const Tiling tiling(s, p.mask, need_kv);
  const int64_t tile = tiling.tile(), d = s.head_dim, bh = s.batch() * s.heads;
  // Delta = rowsum(dO o O) - dL per (batch, head, query row), shared by both passes.
  std::vector<T> delta(static_cast<size_t>(bh * s.q_len));
  parallel_tasks<T>(bh, 1, 1, [&](int64_t t, Scratch<T>&) {
    const int64_t h = t % s.heads, bt = t / s.heads;
    const T* o = HeadSlice<T>::at(s, p.out, bt, h);
    const T* go = HeadSlice<T>::at(s, p.dout, bt, h);
    const T* gl = HeadSlice<T>::at(s, p.dlse, bt, h);
    for (int64_t i = 0; i < s.q_len; ++i) {
      T acc = 0;
      for (int64_t c = 0; c < d; ++c) acc += go[i * p.dout.row + c] * o[i * p.out.row + c];
      delta[static_cast<size_t>(t * s.q_len + i)] = acc - (gl ? gl[i * p.dlse.row] : T(0));
    }
  });
  auto tile_op = [&](int64_t bt, int64_t h, const HeadSlice<T>& hs) {
    return BackwardTile<T>{p,
                           hs,
                           HeadSlice<T>::at(s, p.q, bt, h),
                           HeadSlice<T>::at(s, p.k, bt, h),
                           HeadSlice<T>::at(s, p.v, bt, h),
                           HeadSlice<T>::at(s, p.dout, bt, h),
                           HeadSlice<T>::at(s, p.lse, bt, h),
                           delta.data() + (bt * s.heads + h) * s.q_len,
                           p.lse.row};
  };
  if (need_kv) {
    parallel_tasks<T>(bh * tiling.k_tiles(), tile, d, [&](int64_t t, Scratch<T>& w) {
      const int64_t kt = t % tiling.k_tiles(), h = t / tiling.k_tiles() % s.heads;
      const int64_t bt = t / tiling.k_tiles() / s.heads;
      const HeadSlice<T> hs(s, p.mask, bt, h);
      const BackwardTile<T> bwd = tile_op(bt, h, hs);
      const int64_t j0 = kt * tile, nj = std::min(tile, s.k_len - j0);
      T* dk = w.acc.data();
      T* dv = w.acc2.data();
      std::fill(dk, dk + nj * d, T(0));
      std::fill(dv, dv + nj * d, T(0));
      tiling.for_query_tiles(bt, h, kt, [&](int64_t qt, int64_t entry) {
        const int64_t i0 = qt * tile, ni = std::min(tile, s.q_len - i0);
        bwd(i0, ni, j0, nj, entry, w);
        add_product_t(w.s.data(), ni, nj, bwd.dout + i0 * p.dout.row, p.dout.row, d, dv);
        add_product_t(w.dp.data(), ni, nj, bwd.q + i0 * p.q.row, p.q.row, d, dk);
      });
      if (T* out = HeadSlice<T>::at(s, p.dk, bt, h)) {
        store_rows(dk, nj, d, hs.scale, out + j0 * p.dk.row, p.dk.row, p.accumulate);
      }
      if (T* out = HeadSlice<T>::at(s, p.dv, bt, h)) {
        store_rows(dv, nj, d, T(1), out + j0 * p.dv.row, p.dv.row, p.accumulate);
      }
    });
  }
  if (need_q) {
    T* bias_grad = static_cast<T*>(p.block_bias_grad);
    parallel_tasks<T>(bh * tiling.q_tiles(), tile, d, [&](int64_t t, Scratch<T>& w) {
      const int64_t qt = t % tiling.q_tiles(), h = t / tiling.q_tiles() % s.heads;
      const int64_t bt = t / tiling.q_tiles() / s.heads;
      const HeadSlice<T> hs(s, p.mask, bt, h);
      const BackwardTile<T> bwd = tile_op(bt, h, hs);
      const int64_t i0 = qt * tile, ni = std::min(tile, s.q_len - i0);
      T* dq = w.acc.data();
      std::fill(dq, dq + ni * d, T(0));
      tiling.for_key_tiles(bt, h, qt, [&](int64_t kt, int64_t entry) {
        const int64_t j0 = kt * tile, nj = std::min(tile, s.k_len - j0);
        bwd(i0, ni, j0, nj, entry, w);
        add_product(w.dp.data(), ni, nj, bwd.k + j0 * p.k.row, p.k.row, d, dq);
        if (bias_grad) {
          T sum = 0;
          for (int64_t x = 0; x < ni * nj; ++x) sum += w.dp[static_cast<size_t>(x)];
          bias_grad[entry] += sum;
        }
      });
      if (T* out = HeadSlice<T>::at(s, p.dq, bt, h)) {
        store_rows(dq, ni, d, hs.scale, out + i0 * p.dq.row, p.dq.row, p.accumulate);
      }
    });
  }
}

}  // namespace

void attention_forward(const AttentionForwardParams& p) {
  single_threaded_blas();
  dispatch_float(p.dtype, "attention", [&]<class T>() { forward_impl<T>(p); });
}

void attention_backward(const AttentionBackwardParams& p) {
  single_threaded_blas();
  dispatch_float(p.dtype, "attention_backward", [&]<class T>() { backward_impl<T>(p); });
}

}  // namespace longnet::cpu
