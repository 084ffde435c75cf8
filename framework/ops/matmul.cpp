#include "framework/ops/matmul.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/matmul.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/gemm.h"
#endif
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/elementwise.h"
#include "framework/ops/factory.h"
#include "framework/ops/reduce.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

// How BLAS can read a (rows, cols) matrix with strides (sr, sc) in place: row-major with leading
// dim sr, or as the transpose of a row-major matrix with leading dim sc. Size-1 dims may carry any
// stride, so they never decide. Nothing when neither works (gaps on both axes, broadcast rows).
std::optional<cpu::GemmOperand> blas_layout(int64_t rows, int64_t cols, int64_t sr, int64_t sc) {
  if (sc == 1 || cols == 1) {
    const int64_t ld = rows == 1 ? std::max<int64_t>(cols, 1) : sr;
    if (ld >= std::max<int64_t>(cols, 1)) return cpu::GemmOperand{nullptr, ld, false};
  }
  if (sr == 1 || rows == 1) {
    const int64_t ld = cols == 1 ? std::max<int64_t>(rows, 1) : sc;
    if (ld >= std::max<int64_t>(rows, 1)) return cpu::GemmOperand{nullptr, ld, true};
  }
  return std::nullopt;
}

// The operand for the last two dims of `t`; replaces `t` by a contiguous copy when BLAS cannot
// read it in place.
cpu::GemmOperand matrix_operand(Tensor& t) {
  auto op = blas_layout(t.size(-2), t.size(-1), t.stride(-2), t.stride(-1));
  if (!op) {
    t = t.contiguous();
    op = blas_layout(t.size(-2), t.size(-1), t.stride(-2), t.stride(-1));
  }
  op->data = t.raw_data();
  return *op;
}

// The one GEMM c (M, N) = a (M, K) @ b (K, N) in a's dtype, c's rows ldc apart. a and b may be
// replaced by contiguous copies (matrix_operand), which must outlive the GEMM.
cpu::GemmParams product_params(Tensor& a, Tensor& b, void* c, int64_t ldc) {
  cpu::GemmParams p;
  p.dtype = a.dtype();
  p.m = a.size(0);
  p.n = b.size(1);
  p.k = a.size(1);
  p.a = matrix_operand(a);
  p.b = matrix_operand(b);
  p.c = c;
  p.ldc = ldc;
  return p;
}

// When all rows of `a` over its batch dims and M are equally spaced (a contiguous batch), the
// batch folds into M: returns that row stride.
std::optional<int64_t> folded_row_stride(const Tensor& a) {
  std::optional<int64_t> stride;
  int64_t span = 0;  // distance the dims already walked must fit into the next outer stride
  for (int64_t d = a.dim() - 2; d >= 0; --d) {
    const int64_t n = a.size(d), s = a.stride(d);
    if (n == 1) continue;
    if (!stride) {
      stride = s;
    } else if (s != span) {
      return std::nullopt;
    }
    span = s * n;
  }
  return stride.value_or(std::max<int64_t>(a.size(-1), 1));
}

// The first (K, N) matrix of `b`, whose batch dims are all size 1 or broadcast (stride 0).
Tensor first_matrix(const Tensor& b) {
  return Tensor::from_storage(b.storage(), b.offset(), {b.size(-2), b.size(-1)},
                              {b.stride(-2), b.stride(-1)}, b.dtype());
}

// Element offsets of every batch of a tensor whose batch dims broadcast to `batch`.
std::vector<int64_t> batch_offsets(const Tensor& t, const Shape& batch) {
  Shape full = batch;
  full.push_back(t.size(-2));
  full.push_back(t.size(-1));
  const Strides st = ops::broadcast_strides(t, full);
  std::vector<int64_t> out(static_cast<size_t>(numel_of(batch)));
  std::vector<int64_t> idx(batch.size(), 0);
  int64_t off = 0;
  for (auto& o : out) {
    o = off;
    for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
      const auto u = static_cast<size_t>(d);
      off += st[u];
      if (++idx[u] < batch[u]) break;
      off -= st[u] * batch[u];
      idx[u] = 0;
    }
  }
  return out;
}

#ifdef LONGNET_WITH_CUDA
// The product `p` describes, as cuBLASLt parameters for a single product at the operands' starts
// (batch and offsets are the caller's).
cuda::GemmParams cuda_params(const cpu::GemmParams& p, int device) {
  cuda::GemmParams g;
  g.device = device;
  g.dtype = p.dtype;
  g.m = p.m;
  g.n = p.n;
  g.k = p.k;
  g.a = p.a.data;
  g.lda = p.a.ld;
  g.trans_a = p.a.trans;
  g.b = p.b.data;
  g.ldb = p.b.ld;
  g.trans_b = p.b.trans;
  g.c = p.c;
  g.ldc = p.ldc;
  return g;
}

// The same products on a GPU: one strided-batched cuBLASLt call when the batch offsets are evenly
// spaced (always so for contiguous and broadcast operands), else one call per product.
void gpu_gemm(const cpu::GemmParams& p, int device) {
  cuda::GemmParams g = cuda_params(p, device);
  if (p.batch == 1) {
    const auto at = [](const int64_t* off) { return off ? off[0] : 0; };
    const size_t es = dtype_size(p.dtype);
    g.a = static_cast<const char*>(g.a) + at(p.a_offsets) * es;
    g.b = static_cast<const char*>(g.b) + at(p.b_offsets) * es;
    g.c = static_cast<char*>(g.c) + at(p.c_offsets) * es;
    return cuda::gemm(g);
  }
  const auto even = [&](const int64_t* off, int64_t* stride) {
    *stride = off[1] - off[0];
    for (int64_t i = 0; i < p.batch; ++i) {
      if (off[i] != off[0] + i * *stride) return false;
    }
    return off[0] == 0;
  };
  if (even(p.a_offsets, &g.stride_a) && even(p.b_offsets, &g.stride_b) && even(p.c_offsets, &g.stride_c)) {
    g.batch = p.batch;
    return cuda::gemm(g);
  }
  for (int64_t i = 0; i < p.batch; ++i) {
    cpu::GemmParams one = p;
    one.batch = 1;
    one.a_offsets = p.a_offsets + i;
    one.b_offsets = p.b_offsets + i;
    one.c_offsets = p.c_offsets + i;
    gpu_gemm(one, device);
  }
}
#endif

// Runs the products on the device of the operands.
void run_gemm(const cpu::GemmParams& p, Device device) {
  LN_ON_DEVICE(device, cpu::gemm(p), gpu_gemm(p, device.index));
}

// a (..., M, K) @ b (..., K, N) in the compute dtype, both already promoted to >= 2 dims.
Tensor gemm_forward(Tensor a, Tensor b, const Shape& batch) {
  const ProfileScope scope("gemm");
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  if (m == 0 || n == 0 || k == 0 || numel_of(batch) == 0) return zeros(out_shape, a.dtype(), a.device());
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  cpu::GemmParams p;
  p.dtype = a.dtype();
  p.k = k;
  p.n = n;
  p.c = out.raw_data();
  p.ldc = n;
  const Strides b_batch = ops::broadcast_strides(b, out_shape);
  const bool b_shared = std::all_of(b_batch.begin(), b_batch.end() - 2, [](int64_t s) { return s == 0; });
  const bool a_full = numel_of(Shape(a.shape().begin(), a.shape().end() - 2)) == numel_of(batch);
  if (b_shared && a_full) {
    const int64_t rows = numel_of(batch) * m;
    if (const auto s = folded_row_stride(a)) {
      if (auto op = blas_layout(rows, k, *s, a.stride(-1))) {
        // One big GEMM: (batch * M, K) @ (K, N), the `x @ W^T` of a linear layer.
        Tensor bm = first_matrix(b);
        p.m = rows;
        p.a = *op;
        p.a.data = a.raw_data();
        p.b = matrix_operand(bm);
        run_gemm(p, out.device());
        return out;
      }
    }
  }
  p.m = m;
  p.a = matrix_operand(a);
  p.b = matrix_operand(b);
  const std::vector<int64_t> ao = batch_offsets(a, batch), bo = batch_offsets(b, batch);
  std::vector<int64_t> co(ao.size());
  for (size_t i = 0; i < co.size(); ++i) co[i] = static_cast<int64_t>(i) * m * n;
  p.batch = static_cast<int64_t>(co.size());
  p.a_offsets = ao.data();
  p.b_offsets = bo.data();
  p.c_offsets = co.data();
  run_gemm(p, out.device());
  return out;
}

// Shapes of one product: operands promoted to >= 2 dims, the broadcast batch, the result.
struct ProductShapes {
  Shape a, b, batch, out;
};

ProductShapes product_shapes(const Tensor& a, const Tensor& b, const char* op) {
  LN_CHECK(a.dim() >= 1 && b.dim() >= 1, "[", op, "] operands need at least 1 dim: ",
           shape_str(a.shape()), " @ ", shape_str(b.shape()));
  ProductShapes s{a.shape(), b.shape(), {}, {}};
  if (a.dim() == 1) s.a.insert(s.a.begin(), 1);
  if (b.dim() == 1) s.b.push_back(1);
  LN_CHECK(s.a.back() == s.b[s.b.size() - 2], "[", op, "] inner dims differ: ", shape_str(a.shape()),
           " @ ", shape_str(b.shape()));
  try {
    s.batch = broadcast_shapes(Shape(s.a.begin(), s.a.end() - 2), Shape(s.b.begin(), s.b.end() - 2), op);
  } catch (const Error&) {  // restated with the full shapes, which the batch dims alone hide
    LN_FAIL("[", op, "] batch dims do not broadcast: ", shape_str(a.shape()), " @ ", shape_str(b.shape()));
  }
  s.out = s.batch;
  if (a.dim() > 1) s.out.push_back(s.a[s.a.size() - 2]);
  if (b.dim() > 1) s.out.push_back(s.b.back());
  return s;
}

class MatmulBackward final : public autograd::Node {
 public:
  MatmulBackward(Tensor a, Tensor b) : a_(std::move(a)), b_(std::move(b)) {}
  std::string name() const override { return "MatmulBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const ProductShapes s = product_shapes(a_, b_, "matmul");
    const Tensor a = reshape(a_, s.a), b = reshape(b_, s.b);
    Shape full = s.batch;
    full.push_back(s.a[s.a.size() - 2]);
    full.push_back(s.b.back());
    const Tensor g = reshape(grads[0], full);
    Tensor ga, gb;
    if (next_edges[0].fn) ga = reshape(sum_to(matmul(g, transpose(b, -1, -2)), s.a), a_.shape());
    if (next_edges[1].fn) {
      const int64_t batches = numel_of(s.batch);
      const bool b_shared = numel_of(Shape(s.b.begin(), s.b.end() - 2)) == 1 &&
                            numel_of(Shape(s.a.begin(), s.a.end() - 2)) == batches && batches > 1;
      if (b_shared) {
        // One GEMM over all rows of a instead of a product per batch followed by a sum.
        const int64_t rows = batches * s.a[s.a.size() - 2];
        gb = matmul(transpose(reshape(a, {rows, s.a.back()}), 0, 1), reshape(g, {rows, s.b.back()}));
      } else {
        gb = sum_to(matmul(transpose(a, -1, -2), g), s.b);
      }
      gb = reshape(gb, b_.shape());
    }
    return {ga, gb};
  }
  std::vector<Tensor> saved_tensors() const override { return {a_, b_}; }
  void release_saved() override {
    a_ = Tensor();
    b_ = Tensor();
  }

 private:
  Tensor a_, b_;
};

Tensor product(const Tensor& a, const Tensor& b, const char* op) {
  ops::common_device(op, {a, b});
  ops::require_float(op, a);
  ops::require_float(op, b);
  ops::require_same_dtype(op, a, b);
  const ProductShapes s = product_shapes(a, b, op);
  Tensor out;
  {
    NoGradGuard no_grad;
    Tensor c = gemm_forward(reshape(ops::kernel_input(a), s.a), reshape(ops::kernel_input(b), s.b), s.batch);
    c = reshape(c, s.out);
    out = c.dtype() == a.dtype() ? c : cast(c, a.dtype());
  }
  if (autograd::needs_grad({a, b})) {
    autograd::record(std::make_shared<MatmulBackward>(a.detach(), b.detach()), {a, b}, {out});
  }
  return out;
}

#ifdef LONGNET_WITH_CUDA
// Runs the single product p with `bias` (N, contiguous) added in the GEMM's epilogue or, when
// `a_row_sums` and no bias, the sums over K of op(A)'s rows written by it; returns those sums.
Tensor gpu_gemm_epilogue(const cpu::GemmParams& p, int device, const Tensor& bias, bool a_row_sums,
                         const Tensor& residual) {
  cuda::GemmParams g = cuda_params(p, device);
  if (residual.defined()) {
    g.c_in = residual.raw_data();
    g.beta = 1.0;
  }
  Tensor sums;
  if (bias.defined()) {
    g.epilogue = cuda::GemmEpilogue::Bias;
    g.bias = bias.raw_data();
  } else if (a_row_sums) {
    sums = Tensor::empty({p.m}, p.dtype, Device::cuda(device));
    g.epilogue = cuda::GemmEpilogue::BGradA;
    g.bias_grad = sums.raw_data();
  }
  cuda::gemm(g);
  return sums;
}
#endif

// One GEMM of a linear layer and what comes with it.
struct LinearProduct {
  Tensor c;           // (M, N)
  Tensor a_row_sums;  // (M), when asked for
};

// a (M, K) @ b (K, N) as one GEMM in a's dtype, plus either `bias` (N) added to every row or, when
// `a_row_sums`, the sums of a's rows (the bias gradient when a is dy^T), plus `residual` (M, N) when
// given. On a GPU all happen in the GEMM (the residual as its C with beta 1, one rounding); on the
// CPU, and for empty products, as separate ops (the residual added to the rounded product, as
// add() would). Operands are read in place where BLAS or cuBLASLt can, else copied. Not recorded.
LinearProduct linear_product(Tensor a, Tensor b, const Tensor& bias, bool a_row_sums,
                             const Tensor& residual = Tensor()) {
  NoGradGuard no_grad;
  const DType dtype = a.dtype();
  a = ops::kernel_input(a);
  b = ops::kernel_input(b);
  const Tensor bias_k = bias.defined() ? ops::kernel_input(bias).contiguous() : bias;
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  const Device dev = a.device();
  const bool empty = m == 0 || n == 0 || k == 0;
  const bool fused = dev.is_cuda() && !empty;
  // The GEMM's C must hold the residual in its own dtype and layout (rows n apart).
  const bool fused_residual = fused && residual.defined() && residual.dtype() == a.dtype();
  const Tensor residual_k = fused_residual ? residual.contiguous() : Tensor();
  LinearProduct r;
  r.c = empty ? zeros({m, n}, a.dtype(), dev) : Tensor::empty({m, n}, a.dtype(), dev);
  if (!empty) {
    const cpu::GemmParams p = product_params(a, b, r.c.raw_data(), n);
    LN_ON_DEVICE(dev, cpu::gemm(p),
                 r.a_row_sums = gpu_gemm_epilogue(p, dev.index, bias_k, a_row_sums, residual_k));
  }
  if (!fused) {
    if (bias_k.defined()) add_(r.c, bias_k);
    // As column sums of a^T (dy in its own layout), the form reductions over leading dims take.
    if (a_row_sums) r.a_row_sums = sum(transpose(a, 0, 1), {0});
  }
  if (r.c.dtype() != dtype) {
    r.c = cast(r.c, dtype);
    if (r.a_row_sums.defined()) r.a_row_sums = cast(r.a_row_sums, dtype);
  }
  if (residual.defined() && !fused_residual) add_(r.c, residual);
  return r;
}

// Rows of x (..., in) as one (rows, in) matrix: a view where the layout allows, else a copy.
Tensor as_rows(const Tensor& x) {
  return reshape(x, {numel_of(Shape(x.shape().begin(), x.shape().end() - 1)), x.size(-1)});
}

// dx = dy @ W, dW = dy^T @ x and db = sum_rows(dy), each only when its input needs it. dW and db
// come from one GEMM (on a GPU, db in its epilogue); db alone is a column sum. With a residual
// (a fourth input), its gradient is dy itself, as add's is.
class LinearBackward final : public autograd::Node {
 public:
  LinearBackward(Tensor x, Tensor weight, bool residual)
      : x_(std::move(x)), weight_(std::move(weight)), residual_(residual) {}
  std::string name() const override { return "LinearBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const Tensor g = as_rows(grads[0]);
    const bool bias_grad = next_edges.size() > 2 && next_edges[2].fn;
    Tensor gx, gw, gb;
    if (next_edges[0].fn) {
      // x's gradient so far, when the engine offers it, takes this one in the GEMM's epilogue
      // (beta = 1): an input shared by several products (q, k and v) needs no separate adds.
      gx = grad_sink(0, x_.shape(), g.dtype());
      if (gx.defined()) {
        matmul_into(as_rows(gx), g, weight_, true);
      } else {
        gx = reshape(linear_product(g, weight_, Tensor(), false).c, x_.shape());
      }
    }
    if (next_edges[1].fn) {
      LinearProduct w = linear_product(transpose(g, 0, 1), as_rows(x_), Tensor(), bias_grad);
      gw = std::move(w.c);
      gb = std::move(w.a_row_sums);
    } else if (bias_grad) {
      gb = sum(g, {0});
    }
    std::vector<Tensor> out{gx, gw};
    if (next_edges.size() > 2) out.push_back(gb);
    if (residual_) out.push_back(grads[0]);
    return out;
  }
  std::vector<Tensor> saved_tensors() const override { return {x_, weight_}; }
  void release_saved() override {
    x_ = Tensor();
    weight_ = Tensor();
  }

 private:
  Tensor x_, weight_;
  bool residual_;
};

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) { return product(a, b, "matmul"); }

Tensor bmm(const Tensor& a, const Tensor& b) {
  LN_CHECK(a.dim() == 3 && b.dim() == 3, "[bmm] expected 3-D operands: ", shape_str(a.shape()), " @ ",
           shape_str(b.shape()));
  LN_CHECK(a.size(0) == b.size(0), "[bmm] batch sizes differ: ", shape_str(a.shape()), " @ ",
           shape_str(b.shape()));
  return product(a, b, "bmm");
}

void matmul_into(const Tensor& out, const Tensor& a, const Tensor& b, bool accumulate) {
  const Device dev = ops::common_device("matmul_into", {out, a, b});
  ops::require_float("matmul_into", a);
  ops::require_same_dtype("matmul_into", a, b);
  LN_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2 && a.size(1) == b.size(0) && out.size(0) == a.size(0) &&
               out.size(1) == b.size(1),
           "[matmul_into] out ", shape_str(out.shape()), " cannot hold ", shape_str(a.shape()), " @ ",
           shape_str(b.shape()));
  LN_CHECK(out.dtype() == a.dtype() || (out.dtype() == DType::F32 && is_reduced_float(a.dtype())),
           "[matmul_into] out of ", dtype_name(out.dtype()), " for ", dtype_name(a.dtype()),
           " operands (the operands' dtype, or f32 for bf16/f16)");
  LN_CHECK((out.stride(1) == 1 || out.size(1) <= 1) && (out.size(0) <= 1 || out.stride(0) >= out.size(1)),
           "[matmul_into] out ", shape_str(out.shape()),
           " needs unit column stride and rows that do not overlap, got strides (", out.stride(0), ", ",
           out.stride(1), ")");
  NoGradGuard no_grad;
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate) zero_(out);
    return;
  }
#ifdef LONGNET_WITH_CUDA
  if (dev.is_cuda()) {
    const ProfileScope scope("gemm");
    Tensor ak = a, bk = b;
    const cpu::GemmParams p = product_params(ak, bk, out.raw_data(), m == 1 ? n : out.stride(0));
    cuda::GemmParams g = cuda_params(p, dev.index);
    if (out.dtype() != a.dtype()) g.c_dtype = out.dtype();
    g.beta = accumulate ? 1.0 : 0.0;
    cuda::gemm(g);
    return;
  }
#endif
  (void)dev;
  Tensor product = gemm_forward(ops::kernel_input(a), ops::kernel_input(b), Shape{});
  if (accumulate) add_(product, cast(out, product.dtype()));
  copy_(out, product);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) { return linear_residual(x, weight, bias, Tensor()); }

Tensor linear_residual(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& residual) {
  LN_CHECK(weight.dim() == 2, "[linear] weight must be (out, in), got ", shape_str(weight.shape()));
  LN_CHECK(x.dim() >= 1 && x.size(-1) == weight.size(1), "[linear] input features differ: x ",
           shape_str(x.shape()), " vs weight ", shape_str(weight.shape()));
  LN_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
           "[linear] bias must be (", weight.size(0), "), got ", shape_str(bias.shape()));
  ops::common_device("linear", {x, weight, bias});
  ops::require_float("linear", x);
  ops::require_same_dtype("linear", x, weight);
  if (bias.defined()) ops::require_same_dtype("linear", x, bias);
  Shape out_shape = x.shape();
  out_shape.back() = weight.size(0);
  if (residual.defined()) {
    ops::common_device("linear", {x, residual});
    ops::require_same_dtype("linear", x, residual);
    LN_CHECK(residual.shape() == out_shape, "[linear] residual ", shape_str(residual.shape()),
             " differs from the output ", shape_str(out_shape));
  }
  const ProfileScope scope("linear");
  Tensor y;
  {
    NoGradGuard no_grad;
    y = reshape(linear_product(as_rows(x), transpose(weight, 0, 1), bias, false,
                               residual.defined() ? as_rows(residual) : Tensor())
                    .c,
                out_shape);
  }
  std::vector<Tensor> inputs{x, weight};
  if (bias.defined() || residual.defined()) inputs.push_back(bias);
  if (residual.defined()) inputs.push_back(residual);
  if (autograd::needs_grad(inputs)) {
    autograd::record(std::make_shared<LinearBackward>(x.detach(), weight.detach(), residual.defined()), inputs, {y});
  }
  return y;
}

}  // namespace longnet
