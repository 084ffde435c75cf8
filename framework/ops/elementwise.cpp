#include "framework/ops/elementwise.h"

#include <cmath>

#include "framework/autograd/grad_mode.h"
#include "framework/autograd/node.h"
#include "framework/core/profiler.h"
#include "framework/cpu/elementwise.h"
#ifdef LONGNET_WITH_CUDA
#include "framework/cuda/elementwise.h"
#endif
#include "framework/ops/common.h"
#include "framework/ops/copy.h"
#include "framework/ops/elementwise_math.h"
#include "framework/ops/factory.h"
#include "framework/ops/view.h"

namespace longnet {
namespace {

cpu::StridedOperand operand(const Tensor& t) { return {t.raw_data(), t.dtype(), t.strides().data()}; }

const char* unary_name(UnaryOp op) {
  static const char* names[] = {"neg",  "exp",       "log",       "sqrt", "rsqrt", "tanh",
                                "sigmoid", "relu",   "gelu",      "gelu", "silu",  "abs",
                                "pow",  "clamp",     "add",       "mul"};
  return names[static_cast<int>(op)];
}

// Computes in the kernel dtype of x's device and returns the result in x's dtype.
Tensor unary_forward(UnaryOp op, cpu::UnaryScalars s, const Tensor& x) {
  const char* name = unary_name(op);
  const ProfileScope scope(name);
  ops::require_float(name, x);
  const Device dev = x.device();
  Tensor xc = ops::kernel_input(x);
  Tensor out = Tensor::empty(x.shape(), xc.dtype(), dev);
  LN_ON_DEVICE(dev, cpu::unary(op, s, x.shape(), operand(out), operand(xc)),
               cuda::unary(dev.index, op, s, x.shape(), operand(out), operand(xc)));
  return out.dtype() == x.dtype() ? out : cast(out, x.dtype());
}

// Keeps only what the op's derivative reads (GELU its input, exp its output, add-scalar nothing)
// and computes dx = dy * f'(saved) in one pass over dy and the saved tensor.
class UnaryBackward final : public autograd::Node {
 public:
  UnaryBackward(UnaryOp op, cpu::UnaryScalars s, const Tensor& x, const Tensor& y)
      : op_(op), s_(s), dtype_(x.dtype()),
        saved_(math::derivative_reads_x(op) ? x : (math::derivative_reads_y(op) ? y : Tensor())) {}
  std::string name() const override { return std::string(unary_name(op_)) + "Backward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& g) override {
    // Both devices' kernels take every float dtype as it is (no f32 copies on the CPU either).
    Tensor dy = g[0];
    if (saved_.defined() && dy.dtype() != saved_.dtype()) dy = cast(dy, saved_.dtype());
    // Ops that keep nothing never read the saved operand; dy stands in for its geometry.
    const Tensor& read = saved_.defined() ? saved_ : dy;
    const Device dev = dy.device();
    Tensor dx = Tensor::empty(dy.shape(), dy.dtype(), dev);
    LN_ON_DEVICE(dev, cpu::unary_backward(op_, s_, dy.shape(), operand(dx), operand(read), operand(dy)),
                 cuda::unary_backward(dev.index, op_, s_, dy.shape(), operand(dx), operand(read), operand(dy)));
    return {cast(dx, dtype_)};
  }
  std::vector<Tensor> saved_tensors() const override { return {saved_}; }
  void release_saved() override { saved_ = Tensor(); }

 private:
  UnaryOp op_;
  cpu::UnaryScalars s_;
  DType dtype_;   // of x
  Tensor saved_;  // x or y = f(x), whichever the derivative reads; undefined when neither
};

Tensor unary_op(UnaryOp op, const Tensor& x, cpu::UnaryScalars s = {}) {
  Tensor out = unary_forward(op, s, x);
  if (autograd::needs_grad({x})) {
    autograd::record(std::make_shared<UnaryBackward>(op, s, x.detach(), out.detach()), {x}, {out});
  }
  return out;
}

Tensor binary_forward(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  const ProfileScope scope(name);
  const Device dev = ops::common_device(name, {a, b});
  ops::require_same_dtype(name, a, b);
  LN_CHECK(a.dtype() != DType::Bool, "[", name, "] not defined for bool tensors");
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor ac = ops::kernel_input(a), bc = ops::kernel_input(b);
  Tensor out = Tensor::empty(shape, ac.dtype(), dev);
  const Strides sa = ops::broadcast_strides(ac, shape), sb = ops::broadcast_strides(bc, shape);
  const cpu::StridedOperand oa{ac.raw_data(), ac.dtype(), sa.data()}, ob{bc.raw_data(), bc.dtype(), sb.data()};
  LN_ON_DEVICE(dev, cpu::binary(op, shape, operand(out), oa, ob),
               cuda::binary(dev.index, op, shape, operand(out), oa, ob));
  return out.dtype() == a.dtype() ? out : cast(out, a.dtype());
}

// Keeps the operands only where the gradient formulas read them: add and sub keep none, mul keeps
// each operand for the other's gradient, so a constant factor's partner is dropped.
class BinaryBackward final : public autograd::Node {
 public:
  BinaryBackward(BinaryOp op, const Tensor& a, const Tensor& b)
      : op_(op), a_shape_(a.shape()), b_shape_(b.shape()) {
    const bool grad_a = a.requires_grad(), grad_b = b.requires_grad();
    switch (op) {
      case BinaryOp::Add:
      case BinaryOp::Sub:
        break;
      case BinaryOp::Mul:
        if (grad_b) a_ = a.detach();
        if (grad_a) b_ = b.detach();
        break;
      case BinaryOp::Div:
        if (grad_b) a_ = a.detach();
        b_ = b.detach();
        break;
      case BinaryOp::Maximum:
      case BinaryOp::Minimum:
        a_ = a.detach();
        b_ = b.detach();
        break;
    }
  }
  std::string name() const override { return "BinaryBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const Tensor& g = grads[0];
    const bool need_a = next_edges[0].fn != nullptr, need_b = next_edges[1].fn != nullptr;
    Tensor ga, gb;
    switch (op_) {
      case BinaryOp::Add:
        ga = g;
        gb = g;
        break;
      case BinaryOp::Sub:
        ga = g;
        if (need_b) gb = neg(g);
        break;
      case BinaryOp::Mul:
        if (need_a) ga = mul(g, b_);
        if (need_b) gb = mul(g, a_);
        break;
      case BinaryOp::Div:
        if (need_a) ga = div(g, b_);
        if (need_b) gb = neg(div(mul(g, a_), mul(b_, b_)));
        break;
      case BinaryOp::Maximum:
      case BinaryOp::Minimum: {
        const Tensor take_a = compare(a_, b_, op_ == BinaryOp::Maximum ? CompareOp::Ge : CompareOp::Le);
        const Tensor zero = zeros({}, g.dtype(), g.device());
        if (need_a) ga = where(take_a, g, zero);
        if (need_b) gb = where(take_a, zero, g);
        break;
      }
    }
    return {need_a ? sum_to(ga, a_shape_) : Tensor(), need_b ? sum_to(gb, b_shape_) : Tensor()};
  }
  std::vector<Tensor> saved_tensors() const override { return {a_, b_}; }
  void release_saved() override {
    a_ = Tensor();
    b_ = Tensor();
  }

 private:
  BinaryOp op_;
  Shape a_shape_, b_shape_;
  Tensor a_, b_;  // undefined where no formula reads them
};

Tensor binary_op(BinaryOp op, const Tensor& a, const Tensor& b, const char* name) {
  Tensor out = binary_forward(op, a, b, name);
  if (autograd::needs_grad({a, b})) {
    autograd::record(std::make_shared<BinaryBackward>(op, a, b), {a, b}, {out});
  }
  return out;
}

void check_inplace(const char* op, const Tensor& a) {
  LN_CHECK(!(autograd::grad_enabled() && a.requires_grad()), "[", op,
           "] in-place update of a tensor that requires grad while grad mode is on (use NoGradGuard)");
}

}  // namespace

Tensor neg(const Tensor& x) { return unary_op(UnaryOp::Neg, x); }
Tensor exp(const Tensor& x) { return unary_op(UnaryOp::Exp, x); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::Log, x); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::Sqrt, x); }
Tensor rsqrt(const Tensor& x) { return unary_op(UnaryOp::Rsqrt, x); }
Tensor tanh(const Tensor& x) { return unary_op(UnaryOp::Tanh, x); }
Tensor sigmoid(const Tensor& x) { return unary_op(UnaryOp::Sigmoid, x); }
Tensor relu(const Tensor& x) { return unary_op(UnaryOp::Relu, x); }
Tensor gelu(const Tensor& x, bool approximate_tanh) {
  return unary_op(approximate_tanh ? UnaryOp::GeluTanh : UnaryOp::GeluErf, x);
}
Tensor silu(const Tensor& x) { return unary_op(UnaryOp::Silu, x); }
Tensor abs(const Tensor& x) { return unary_op(UnaryOp::Abs, x); }
Tensor pow(const Tensor& x, double exponent) { return unary_op(UnaryOp::Pow, x, {exponent, 0.0}); }
Tensor clamp(const Tensor& x, double lo, double hi) {
  LN_CHECK(lo <= hi, "[clamp] lower bound ", lo, " above upper bound ", hi);
  return unary_op(UnaryOp::Clamp, x, {lo, hi});
}
Tensor add(const Tensor& x, double s) { return unary_op(UnaryOp::AddScalar, x, {s, 0.0}); }
Tensor mul(const Tensor& x, double s) { return unary_op(UnaryOp::MulScalar, x, {s, 0.0}); }

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Add, a, b, "add"); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Sub, a, b, "sub"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Mul, a, b, "mul"); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Div, a, b, "div"); }
Tensor maximum(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Maximum, a, b, "maximum"); }
Tensor minimum(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Minimum, a, b, "minimum"); }

Tensor compare(const Tensor& a, const Tensor& b, CompareOp op) {
  const Device dev = ops::common_device("compare", {a, b});
  ops::require_same_dtype("compare", a, b);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), "compare");
  Tensor ac = ops::kernel_input(a), bc = ops::kernel_input(b);
  if (ac.dtype() == DType::Bool) {
    ac = cast(ac, DType::U8);
    bc = cast(bc, DType::U8);
  }
  Tensor out = Tensor::empty(shape, DType::Bool, dev);
  const Strides sa = ops::broadcast_strides(ac, shape), sb = ops::broadcast_strides(bc, shape);
  const cpu::StridedOperand oa{ac.raw_data(), ac.dtype(), sa.data()}, ob{bc.raw_data(), bc.dtype(), sb.data()};
  LN_ON_DEVICE(dev, cpu::compare(op, shape, operand(out), oa, ob),
               cuda::compare(dev.index, op, shape, operand(out), oa, ob));
  return out;
}

Tensor compare(const Tensor& a, double s, CompareOp op) {
  // Converting a fractional s to an integer dtype would truncate it (x >= 0.5 would become x >= 0).
  if (!is_floating(a.dtype()) && s != std::trunc(s)) {
    return compare(cast(a, DType::F64), full({}, s, DType::F64, a.device()), op);
  }
  return compare(a, full({}, s, a.dtype(), a.device()), op);
}

namespace {

class WhereBackward final : public autograd::Node {
 public:
  WhereBackward(Tensor cond, Shape a, Shape b) : cond_(std::move(cond)), a_(std::move(a)), b_(std::move(b)) {}
  std::string name() const override { return "WhereBackward"; }
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    const Tensor& g = grads[0];
    const Tensor zero = zeros({}, g.dtype(), g.device());
    Tensor ga, gb;
    if (next_edges[1].fn) ga = sum_to(where(cond_, g, zero), a_);
    if (next_edges[2].fn) gb = sum_to(where(cond_, zero, g), b_);
    return {Tensor(), ga, gb};
  }
  std::vector<Tensor> saved_tensors() const override { return {cond_}; }
  void release_saved() override { cond_ = Tensor(); }

 private:
  Tensor cond_;
  Shape a_, b_;
};

}  // namespace

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  const Device dev = ops::common_device("where", {cond, a, b});
  LN_CHECK(cond.dtype() == DType::Bool || cond.dtype() == DType::U8,
           "[where] condition must be bool or u8, got ", dtype_name(cond.dtype()));
  ops::require_same_dtype("where", a, b);
  const Shape shape =
      broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = Tensor::empty(shape, a.dtype(), dev);
  const Strides sc = ops::broadcast_strides(cond, shape), sa = ops::broadcast_strides(a, shape),
                sb = ops::broadcast_strides(b, shape);
  const cpu::StridedOperand oc{cond.raw_data(), cond.dtype(), sc.data()}, oa{a.raw_data(), a.dtype(), sa.data()},
      ob{b.raw_data(), b.dtype(), sb.data()};
  LN_ON_DEVICE(dev, cpu::where(shape, operand(out), oc, oa, ob),
               cuda::where(dev.index, shape, operand(out), oc, oa, ob));
  if (autograd::needs_grad({a, b})) {
    autograd::record(std::make_shared<WhereBackward>(cond.detach(), a.shape(), b.shape()),
                     {cond, a, b}, {out});
  }
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  LN_CHECK(broadcast_shapes(mask.shape(), x.shape(), "masked_fill") == x.shape(),
           "[masked_fill] mask ", shape_str(mask.shape()), " does not broadcast to ", shape_str(x.shape()));
  return where(mask, full({}, value, x.dtype(), x.device()), x);
}

void add_(const Tensor& a, const Tensor& b, double alpha) {
  check_inplace("add_", a);
  NoGradGuard no_grad;
  ops::require_same_dtype("add_", a, b);
  const Device dev = ops::common_device("add_", {a, b});
  LN_CHECK(broadcast_shapes(a.shape(), b.shape(), "add_") == a.shape(), "[add_] cannot broadcast ",
           shape_str(b.shape()), " into ", shape_str(a.shape()));
  const Tensor scaled = alpha == 1.0 ? b : mul(b, alpha);
  if (ops::kernel_dtype(a) != a.dtype()) {  // 16-bit floats on the CPU: add in f32, round once
    copy_(a, add(cast(a, DType::F32), cast(scaled, DType::F32)));
    return;
  }
  const Strides sb = ops::broadcast_strides(scaled, a.shape());
  const cpu::StridedOperand ob{scaled.raw_data(), scaled.dtype(), sb.data()};
  LN_ON_DEVICE(dev, cpu::binary(BinaryOp::Add, a.shape(), operand(a), operand(a), ob),
               cuda::binary(dev.index, BinaryOp::Add, a.shape(), operand(a), operand(a), ob));
}

void mul_(const Tensor& a, double s) {
  check_inplace("mul_", a);
  NoGradGuard no_grad;
  copy_(a, mul(a, s));
}

void zero_(const Tensor& a) {
  check_inplace("zero_", a);
  fill_(a, 0.0);
}

Tensor operator-(const Tensor& x) { return neg(x); }
Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
Tensor operator+(const Tensor& a, double s) { return add(a, s); }
Tensor operator-(const Tensor& a, double s) { return add(a, -s); }
Tensor operator*(const Tensor& a, double s) { return mul(a, s); }
Tensor operator/(const Tensor& a, double s) { return mul(a, 1.0 / s); }
Tensor operator*(double s, const Tensor& a) { return mul(a, s); }

}  // namespace longnet
