#pragma once
// What every core's decode shares: input checks, the append to the cache, the result's dtype.
// Internal to layers/attention (the decode*.cpp files).
#include "layers/attention/core.h"
#include "layers/attention/decode.h"

namespace longnet::decode_detail {

/// One decode call after its k, v were appended: q in the cache's dtype (contiguous) and the
/// positions [start, end) of its rows.
struct DecodeStep {
  Tensor q;
  int64_t start = 0, end = 0;
};

/// Checks q, k, v (B, n, H, D) with n >= 1 (naming `core`), appends k, v to the cache and returns
/// the step.
DecodeStep begin_decode(const char* core, const Tensor& q, const Tensor& k, const Tensor& v, KvCache& cache);

/// The core result of a decode: out cast to the caller's q dtype, lse as computed.
AttentionResult finish_decode(const Tensor& q, const AttentionOutput& r);

}  // namespace longnet::decode_detail
