#pragma once
// Scaled dot-product attention, flash style (tiles of keys with an online softmax, never the full
// score matrix), and the exact log-sum-exp merge of partial attention results.
//
// Every attention result carries, per query row, its output and its log-sum-exp (natural log of
// the softmax denominator of the scaled scores). Parts over different key sets merge exactly:
// L = logsumexp_i lse_i, O = sum_i exp(lse_i - L) o_i. The backward of a part needs only the FINAL
// output and lse of the attention it belongs to: with P = exp(S - L) and
// Delta = rowsum(dO o O) - dL, dS = P (dO V^T - Delta), so composite cores run each part's
// backward with the merged O and L and lose nothing through the mixing weights.
#include <memory>
#include <optional>
#include <vector>

#include "framework/core/tensor.h"

namespace longnet {

/// Block-sparse layout: for each (layout batch, layout head, query block), the ascending list of
/// key blocks it attends to, in CSR form. `batch` is 1 (shared) or the flattened batch size of q;
/// `heads` is 1 (shared) or H. Pairs hidden by the causal mask inside a listed block (the diagonal
/// block) stay masked.
struct AttentionLayout {
  int64_t block_size = 0;
  int64_t batch = 1;
  int64_t heads = 1;
  int64_t query_blocks = 0;
  int64_t key_blocks = 0;
  std::vector<int64_t> row_offsets;    // batch * heads * query_blocks + 1
  std::vector<int64_t> key_block_ids;  // row_offsets.back() entries

  /// Number of listed (query block, key block) pairs over all groups.
  int64_t entries() const { return static_cast<int64_t>(key_block_ids.size()); }
  /// Row index of (batch, head, query block) into row_offsets.
  int64_t row(int64_t b, int64_t h, int64_t qb) const { return (b * heads + h) * query_blocks + qb; }
  /// Builds a layout from one key-block list per row (row order as in row()); lists are sorted
  /// and de-duplicated.
  static AttentionLayout from_rows(int64_t block_size, int64_t batch, int64_t heads, int64_t query_blocks,
                                   int64_t key_blocks, std::vector<std::vector<int64_t>> rows);
};

/// Options of one attention call.
struct AttentionParams {
  /// Multiplies q.k; 1/sqrt(D) when unset.
  std::optional<double> scale;
  /// Query i sees key j only when j <= i + causal_offset (offset Nk - N aligns the last query
  /// with the last key, as when decoding against a KV cache).
  bool causal = false;
  int64_t causal_offset = 0;
  /// (..., Nk) bool or u8, true where a key is padding and must not be attended; or undefined.
  Tensor key_padding_mask;
  /// Restricts each query block to the listed key blocks; null means every key.
  std::shared_ptr<const AttentionLayout> layout;
  /// (layout entries): added to the scaled scores of each listed block; differentiable. Needs a
  /// layout with one group per batch element and head. Undefined means none.
  Tensor block_bias;
};

/// The output (..., N, H, D) and log-sum-exp (..., H, N) of attention; rows that see no key have
/// out = 0 and lse = -inf. lse is f32 (f64 for f64 inputs).
struct AttentionOutput {
  Tensor out;
  Tensor lse;
};

/// Gradients of an attention part; undefined where not requested.
struct AttentionGrads {
  Tensor dq, dk, dv;
  Tensor dblock_bias;
};

/// Which kernel dense attention parts run on the GPU: `Auto` takes cuDNN's fused attention where
/// it can express the part (bf16/f16, no key padding, no block layout or bias, top-left causal,
/// no lse gradient) and ours elsewhere; `Own` always ours; `Cudnn` fails where cuDNN declines a
/// graph it was offered (for tests and benchmarks). Process-wide.
enum class AttentionKernel { Auto, Own, Cudnn };
void set_attention_kernel(AttentionKernel kernel);
AttentionKernel attention_kernel();

/// Sets the attention kernel for its scope and restores the previous choice after.
class AttentionKernelScope {
 public:
  explicit AttentionKernelScope(AttentionKernel kernel) : prev_(attention_kernel()) { set_attention_kernel(kernel); }
  ~AttentionKernelScope() { set_attention_kernel(prev_); }
  AttentionKernelScope(const AttentionKernelScope&) = delete;
  AttentionKernelScope& operator=(const AttentionKernelScope&) = delete;

 private:
  AttentionKernel prev_;
};

/// Differentiable attention: q (..., N, H, D), k and v (..., Nk, H, D) with up to 4 leading batch
/// dims, usually (B, N, H, D). Gradients flow from both out and lse (so merged results are exact).
/// 16-bit inputs are computed in f32 on the CPU; out has q's dtype.
AttentionOutput attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params = {});

/// The forward alone (not recorded), for composite cores.
AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params);

/// The forward into caller-owned (possibly strided) views: out (..., N, H, D), lse (..., H, N).
/// q, k, v and out share one kernel dtype (f32 or f64 on the CPU), lse is f32 (f64 with f64); the
/// last dim of q, k, v, out must be contiguous. Not recorded.
void attention_forward_into(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionParams& params,
                            const Tensor& out, const Tensor& lse);

/// The exact backward of the part (q, k, v, params) of an attention whose FINAL output and lse are
/// `out`, `lse` (the merged result when parts were combined), given dout and dlse (undefined:
/// zero). Not recorded. Computes the gradients whose `want_*` flag is set, in the kernel dtype.
AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                  const Tensor& lse, const Tensor& dout, const Tensor& dlse,
                                  const AttentionParams& params, bool want_dq = true, bool want_dk = true,
                                  bool want_dv = true, bool want_dblock_bias = false);

/// attention_backward into caller-owned views (any of which may be undefined: not computed), each
/// shaped like its input, in the kernel dtype; `accumulate` adds instead of overwriting (parts
/// sharing keys). dblock_bias, when defined, always receives a sum added to it.
void attention_backward_into(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                             const Tensor& lse, const Tensor& dout, const Tensor& dlse,
                             const AttentionParams& params, const AttentionGrads& into, bool accumulate);

/// Exact, differentiable merge of partial results over the same query rows:
/// L = logsumexp_i lse_i, O = sum_i exp(lse_i - L) o_i; rows whose lse are all -inf give O = 0 and
/// L = -inf. Gradients flow to every o_i and through the weights to every lse_i.
AttentionOutput merge_attention(const std::vector<AttentionOutput>& parts);

}  // namespace longnet
