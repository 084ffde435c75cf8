#pragma once
// Attention references for tests: plain loops over std::vector<double>, and a materialised
// softmax(Q K^T * scale + mask) V written with framework ops (matmul, softmax, logsumexp) whose
// autograd gives reference gradients. The mask is a key multiplicity: 0 hides a key, 1 shows it,
// 2 counts it twice (a key two merged branches both see).
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "framework/ops/attention.h"
#include "framework/ops/ops.h"

namespace longnet::testing {

/// Multiplicity of key j for query i of (batch b, head h): 0 hidden, 1 visible, n counted n times.
using KeyCountFn = std::function<double(int64_t b, int64_t h, int64_t i, int64_t j)>;

/// Every key once.
inline KeyCountFn all_keys() {
  return [](int64_t, int64_t, int64_t, int64_t) { return 1.0; };
}

/// Keys j <= i + offset.
inline KeyCountFn causal_keys(int64_t offset = 0) {
  return [offset](int64_t, int64_t, int64_t i, int64_t j) { return j <= i + offset ? 1.0 : 0.0; };
}

/// Naive attention of q (B, N, H, D), k, v (B, Nk, H, D): out (B, N, H, D) and lse (B, H, N) in
/// row-major order. Rows that see no key get out = 0 and lse = -inf.
struct NaiveAttention {
  std::vector<double> out;
  std::vector<double> lse;
};

inline NaiveAttention naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, const KeyCountFn& count,
                                      double scale) {
  const auto qv = q.to_vector<double>(), kv = k.to_vector<double>(), vv = v.to_vector<double>();
  const int64_t B = q.size(0), N = q.size(1), H = q.size(2), D = q.size(3), Nk = k.size(1);
  NaiveAttention r{std::vector<double>(qv.size(), 0.0), std::vector<double>(static_cast<size_t>(B * H * N))};
  auto at = [&](int64_t b, int64_t n, int64_t h, int64_t len) { return static_cast<size_t>(((b * len + n) * H + h) * D); };
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < N; ++i) {
        std::vector<double> s(static_cast<size_t>(Nk), -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Nk; ++j) {
          const double c = count(b, h, i, j);
          if (c == 0.0) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) dot += qv[at(b, i, h, N) + d] * kv[at(b, j, h, Nk) + d];
          s[j] = dot * scale + std::log(c);
          mx = std::max(mx, s[j]);
        }
        double& lse = r.lse[static_cast<size_t>((b * H + h) * N + i)];
        if (mx == -std::numeric_limits<double>::infinity()) {
          lse = mx;
          continue;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < Nk; ++j) sum += std::exp(s[j] - mx);
        for (int64_t j = 0; j < Nk; ++j) {
          const double p = std::exp(s[j] - mx) / sum;
          for (int64_t d = 0; d < D; ++d) r.out[at(b, i, h, N) + d] += p * vv[at(b, j, h, Nk) + d];
        }
        lse = mx + std::log(sum);
      }
    }
  }
  return r;
}

/// The log of the multiplicities as an additive score mask (B, H, N, Nk) in f64: 0 for a key
/// seen once, log 2 for one counted twice, -inf for a hidden one.
inline Tensor score_mask(int64_t B, int64_t H, int64_t N, int64_t Nk, const KeyCountFn& count) {
  std::vector<double> m(static_cast<size_t>(B * H * N * Nk));
  size_t x = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t j = 0; j < Nk; ++j) m[x++] = std::log(count(b, h, i, j));
      }
    }
  }
  return from_vector(m, {B, H, N, Nk});
}

/// Materialised, differentiable attention: softmax(Q K^T * scale + mask) V with mask from
/// score_mask (cast to q's dtype); out (B, N, H, D), lse (B, H, N).
inline AttentionOutput reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                           double scale) {
  const Tensor qh = permute(q, {0, 2, 1, 3}), kh = permute(k, {0, 2, 3, 1}), vh = permute(v, {0, 2, 1, 3});
  const Tensor s = add(mul(matmul(qh, kh), scale), cast(mask, q.dtype()));
  const Tensor p = softmax(s, -1);
  return {permute(matmul(p, vh), {0, 2, 1, 3}), logsumexp(s, {-1})};
}

/// Reference attention with a multiplicity function.
inline AttentionOutput reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, const KeyCountFn& count,
                                           double scale) {
  return reference_attention(q, k, v, score_mask(q.size(0), q.size(2), q.size(1), k.size(1), count), scale);
}

/// Keys a block layout lets query i of (b, h) see (block granularity; causal masking separate).
inline KeyCountFn layout_keys(const AttentionLayout& l) {
  return [l](int64_t b, int64_t h, int64_t i, int64_t j) {
    const int64_t r = l.row(l.batch == 1 ? 0 : b, l.heads == 1 ? 0 : h, i / l.block_size);
    for (int64_t e = l.row_offsets[static_cast<size_t>(r)]; e < l.row_offsets[static_cast<size_t>(r) + 1]; ++e) {
      if (l.key_block_ids[static_cast<size_t>(e)] == j / l.block_size) return 1.0;
    }
    return 0.0;
  };
}

/// The product of two multiplicities (both masks apply).
inline KeyCountFn both(KeyCountFn a, KeyCountFn b) {
  return [a, b](int64_t bb, int64_t h, int64_t i, int64_t j) { return a(bb, h, i, j) * b(bb, h, i, j); };
}

}  // namespace longnet::testing
