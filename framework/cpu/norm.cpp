#include "framework/cpu/norm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/cpu/loops.h"
#include "framework/ops/elementwise_math.h"

namespace longnet::cpu {
namespace {

// Upper bound on the row chunks of the backward: enough to keep many threads busy, few enough
// that the (chunks, len) partial sums stay small.
constexpr int64_t kMaxChunks = 128;

// The value a row normalises at x: x itself, or gelu(x) when the norm takes a pre-activation.
double normed(double x, bool gelu) { return gelu ? math::unary<UnaryOp::GeluErf>(x, 0.0, 0.0) : x; }

}  // namespace

void norm_forward(const NormParams& p) {
  dispatch_float(p.dtype, p.rms ? "rms_norm" : "layer_norm", [&]<class T>() {
    const T* x = static_cast<const T*>(p.x);
    const T* w = static_cast<const T*>(p.weight);
    const T* b = static_cast<const T*>(p.bias);
    T* y = static_cast<T*>(p.y);
    T* mean_out = static_cast<T*>(p.mean);
    T* rstd_out = static_cast<T*>(p.rstd);
    const int64_t len = p.len;
    parallel_for(
        p.rows,
        [&](int64_t r) {
          const T* xr = x + r * len;
          T* yr = y + r * len;
          double mu = 0.0;
          if (!p.rms) {
            for (int64_t j = 0; j < len; ++j) mu += normed(static_cast<double>(xr[j]), p.gelu);
            mu /= static_cast<double>(len);
          }
          // Second pass over the cached row: the centred sum of squares does not cancel the way
          // E[x^2] - E[x]^2 does.
          double ss = 0.0;
          for (int64_t j = 0; j < len; ++j) {
            const double d = normed(static_cast<double>(xr[j]), p.gelu) - mu;
            ss += d * d;
          }
          const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(len) + p.eps);
          const T m = static_cast<T>(mu), s = static_cast<T>(rstd);
          for (int64_t j = 0; j < len; ++j) {
            T v = (static_cast<T>(normed(static_cast<double>(xr[j]), p.gelu)) - m) * s;
            if (w) v *= w[j];
            if (b) v += b[j];
            yr[j] = v;
          }
          if (mean_out) mean_out[r] = m;
          rstd_out[r] = s;
        },
        std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, len)));
  });
}

void norm_backward(const NormBackwardParams& p) {
  dispatch_float(p.dtype, p.rms ? "rms_norm_backward" : "layer_norm_backward", [&]<class T>() {
    const T* x = static_cast<const T*>(p.x);
    const T* w = static_cast<const T*>(p.weight);
    const T* mean = static_cast<const T*>(p.mean);
    const T* rstd = static_cast<const T*>(p.rstd);
    const T* dy = static_cast<const T*>(p.dy);
    T* dx = static_cast<T*>(p.dx);
    const T* dx_add = static_cast<const T*>(p.dx_add);
    const int64_t len = p.len, rows = p.rows;
    const int64_t chunks = std::min(rows, kMaxChunks);
    std::vector<double> dw_part(p.dweight ? static_cast<size_t>(chunks * len) : 0, 0.0);
    std::vector<double> db_part(p.dbias ? static_cast<size_t>(chunks * len) : 0, 0.0);
#pragma omp parallel for schedule(static) if (rows * len >= kParallelGrain && chunks > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      double* dwc = p.dweight ? dw_part.data() + c * len : nullptr;
      double* dbc = p.dbias ? db_part.data() + c * len : nullptr;
      for (int64_t r = c * rows / chunks; r < (c + 1) * rows / chunks; ++r) {
        const T* xr = x + r * len;
        const T* gr = dy + r * len;
        const double m = mean ? static_cast<double>(mean[r]) : 0.0;
        const double s = static_cast<double>(rstd[r]);
        if (dx) {
          // dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat)), gw = dy * weight; RMSNorm
          // drops the mean(gw) term because it does not centre.
          double sum_gw = 0.0, sum_gwx = 0.0;
          for (int64_t j = 0; j < len; ++j) {
            const double gw = static_cast<double>(gr[j]) * (w ? static_cast<double>(w[j]) : 1.0);
            sum_gw += gw;
            sum_gwx += gw * (normed(static_cast<double>(xr[j]), p.gelu) - m) * s;
          }
          const double inv_len = 1.0 / static_cast<double>(len);
          const T a = p.rms ? T(0) : static_cast<T>(sum_gw * inv_len);
          const T bb = static_cast<T>(sum_gwx * inv_len);
          const T mt = static_cast<T>(m), st = static_cast<T>(s);
          T* dxr = dx + r * len;
          const T* addr = dx_add ? dx_add + r * len : nullptr;
          for (int64_t j = 0; j < len; ++j) {
            const T gw = w ? gr[j] * w[j] : gr[j];
            const double h = static_cast<double>(xr[j]), act = normed(h, p.gelu);
            const T xhat = (static_cast<T>(act) - mt) * st;
            T d = st * (gw - a - xhat * bb);
            if (p.gelu) d *= static_cast<T>(math::derivative<UnaryOp::GeluErf>(h, act, 0.0, 0.0));
            dxr[j] = addr ? addr[j] + d : d;
          }
        }
        if (dwc) {
          for (int64_t j = 0; j < len; ++j) {
            dwc[j] += static_cast<double>(gr[j]) * (normed(static_cast<double>(xr[j]), p.gelu) - m) * s;
          }
        }
        if (dbc) {
          for (int64_t j = 0; j < len; ++j) dbc[j] += static_cast<double>(gr[j]);
        }
      }
    }
    auto reduce_chunks = [&](const std::vector<double>& part, void* out) {
      if (!out) return;
      T* o = static_cast<T*>(out);
      parallel_for(
          len,
          [&](int64_t j) {
            double acc = 0.0;
            for (int64_t c = 0; c < chunks; ++c) acc += part[static_cast<size_t>(c * len + j)];
            o[j] = static_cast<T>(acc);
          },
          std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(1, chunks)));
    };
    reduce_chunks(dw_part, p.dweight);
    reduce_chunks(db_part, p.dbias);
  });
}

}  // namespace longnet::cpu
