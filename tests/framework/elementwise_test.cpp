// Elementwise ops: unary math, broadcasting binary arithmetic, comparisons, selection, in-place
// updates, 16-bit float and integer inputs; each against plain loops and central differences.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "framework/autograd/node.h"
#include "framework/ops/ops.h"
#include "tests/framework/reference.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::Domain;
using testing::domain_leaf;
using testing::domain_values;
using testing::gradcheck;
using testing::leaf;
using testing::naive_broadcast;
using testing::near_all;

using Fn = std::vector<Tensor>;
constexpr double kClampLo = -0.6, kClampHi = 0.8;

struct UnaryCase {
  std::string name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  Domain domain;
  std::vector<double> kinks;
};

double gelu_erf_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double gelu_tanh_ref(double x) {
  const double pi = std::acos(-1.0);
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / pi) * (x + 0.044715 * x * x * x)));
}

std::vector<UnaryCase> unary_cases() {
  return {
      {"neg", [](const Tensor& x) { return neg(x); }, [](double x) { return -x; }, Domain::Any, {}},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, Domain::Any, {}},
      {"log", [](const Tensor& x) { return log(x); }, [](double x) { return std::log(x); }, Domain::Positive, {}},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, Domain::Positive, {}},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double x) { return 1.0 / std::sqrt(x); },
       Domain::Positive, {}},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, Domain::Any, {}},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, [](double x) { return 1.0 / (1.0 + std::exp(-x)); },
       Domain::Any, {}},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; },
       Domain::AwayFromZero, {}},
      {"gelu_erf", [](const Tensor& x) { return gelu(x); }, gelu_erf_ref, Domain::Any, {}},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, true); }, gelu_tanh_ref, Domain::Any, {}},
      {"silu", [](const Tensor& x) { return silu(x); }, [](double x) { return x / (1.0 + std::exp(-x)); },
       Domain::Any, {}},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double x) { return std::abs(x); }, Domain::AwayFromZero, {}},
      {"pow_2", [](const Tensor& x) { return pow(x, 2.0); }, [](double x) { return x * x; }, Domain::Any, {}},
      {"pow_3", [](const Tensor& x) { return pow(x, 3.0); }, [](double x) { return x * x * x; }, Domain::Any, {}},
      {"pow_0", [](const Tensor& x) { return pow(x, 0.0); }, [](double) { return 1.0; }, Domain::Any, {}},
      {"pow_0.5", [](const Tensor& x) { return pow(x, 0.5); }, [](double x) { return std::sqrt(x); },
       Domain::Positive, {}},
      {"pow_-1.5", [](const Tensor& x) { return pow(x, -1.5); }, [](double x) { return std::pow(x, -1.5); },
       Domain::Positive, {}},
      {"pow_2.7", [](const Tensor& x) { return pow(x, 2.7); }, [](double x) { return std::pow(x, 2.7); },
       Domain::Positive, {}},
      {"clamp", [](const Tensor& x) { return clamp(x, kClampLo, kClampHi); },
       [](double x) { return std::min(std::max(x, kClampLo), kClampHi); }, Domain::Any, {kClampLo, kClampHi}},
      {"add_scalar", [](const Tensor& x) { return add(x, 1.5); }, [](double x) { return x + 1.5; }, Domain::Any, {}},
      {"mul_scalar", [](const Tensor& x) { return mul(x, -2.5); }, [](double x) { return x * -2.5; }, Domain::Any, {}},
      {"sub_scalar_operator", [](const Tensor& x) { return x - 0.75; }, [](double x) { return x - 0.75; },
       Domain::Any, {}},
      {"div_scalar_operator", [](const Tensor& x) { return x / 4.0; }, [](double x) { return x / 4.0; },
       Domain::Any, {}},
  };
}

std::vector<double> apply_ref(const UnaryCase& c, const std::vector<double>& x) {
  std::vector<double> y;
  for (double v : x) y.push_back(c.ref(v));
  return y;
}

TEST(ElementwiseUnary, ForwardMatchesStdMathOnStridedInputs) {
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    for (DType dt : {DType::F64, DType::F32}) {
      // A transposed, strided view: the kernel must follow the strides.
      Tensor base = from_vector<double>(domain_values(60, 11, c.domain, c.kinks), {6, 10}).to(dt);
      Tensor x = base.transpose(0, 1).slice(0, 1, 10, 2);
      ASSERT_FALSE(x.is_contiguous());
      Tensor y = c.op(x);
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_EQ(y.shape(), (Shape{5, 6}));
      const double tol = dt == DType::F64 ? 1e-13 : 2e-6;
      EXPECT_TRUE(near_all(y.to_vector<double>(), apply_ref(c, x.to_vector<double>()), tol, tol));
    }
  }
}

TEST(ElementwiseUnary, GeluKnownValues) {
  Tensor x = from_vector<double>({-1.0, 0.0, 1.0, 2.0}, {4});
  EXPECT_TRUE(near_all(gelu(x).to_vector<double>(),
                       {-0.15865525393145707, 0.0, 0.8413447460685429, 1.9544997361036416}, 1e-12, 1e-12));
  EXPECT_TRUE(near_all(gelu(x, true).to_vector<double>(),
                       {-0.15880800939172324, 0.0, 0.8411919906082768, 1.954597694087775}, 1e-12, 1e-12));
}

TEST(ElementwiseUnary, GradcheckContiguous) {
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(gradcheck([&](const Fn& x) { return c.op(x[0]); }, {domain_leaf({3, 4}, 21, c.domain, c.kinks)}));
  }
}

TEST(ElementwiseUnary, GradcheckTransposed) {
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(gradcheck([&](const Fn& x) { return c.op(x[0].transpose(0, 1)); },
                          {domain_leaf({4, 3}, 22, c.domain, c.kinks)}));
  }
}

TEST(ElementwiseUnary, GradcheckStridedSlice) {
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(gradcheck([&](const Fn& x) { return c.op(x[0].slice(1, 1, 8, 2)); },
                          {domain_leaf({3, 8}, 23, c.domain, c.kinks)}));
  }
}

// The upstream gradient arrives transposed (non-contiguous) while the saved tensor is contiguous.
TEST(ElementwiseUnary, GradcheckNonContiguousUpstreamGradient) {
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(gradcheck([&](const Fn& x) { return c.op(x[0]).transpose(0, 1); },
                          {domain_leaf({3, 5}, 24, c.domain, c.kinks)}));
  }
}

// Large enough that the contiguous backward runs its parallel loop: dx = w * f'(x) with f'
// written out here, in f32 and f64.
TEST(ElementwiseUnary, LargeContiguousBackwardMatchesDerivativeFormulas) {
  const double pi = std::acos(-1.0);
  const std::vector<std::pair<std::string, std::function<double(double)>>> derivs = {
      {"gelu_erf", [pi](double x) { return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-x * x / 2) / std::sqrt(2 * pi); }},
      {"silu", [](double x) { const double s = 1 / (1 + std::exp(-x)); return s + x * s * (1 - s); }},
      {"tanh", [](double x) { return 1 / (std::cosh(x) * std::cosh(x)); }},
      {"exp", [](double x) { return std::exp(x); }},
      {"neg", [](double) { return -1.0; }},
  };
  const Shape shape = {300, 257};
  const std::vector<double> xv = domain_values(numel_of(shape), 31, Domain::Any);
  const std::vector<double> wv = domain_values(numel_of(shape), 32, Domain::Any);
  const std::vector<UnaryCase> cases = unary_cases();
  for (const auto& [name, deriv] : derivs) {
    const auto c = std::find_if(cases.begin(), cases.end(), [&](const UnaryCase& u) { return u.name == name; });
    ASSERT_NE(c, cases.end()) << name;
    for (DType dt : {DType::F64, DType::F32}) {
      SCOPED_TRACE(name + " " + dtype_name(dt));
      Tensor x = from_vector<double>(xv, shape).to(dt).requires_grad_(true);
      Tensor w = from_vector<double>(wv, shape).to(dt);
      sum(mul(c->op(x), w)).backward();
      std::vector<double> want(xv.size());
      const std::vector<double> xr = x.to_vector<double>(), wr = w.to_vector<double>();
      for (size_t i = 0; i < want.size(); ++i) want[i] = wr[i] * deriv(xr[i]);
      const double tol = dt == DType::F64 ? 1e-12 : 1e-5;
      EXPECT_TRUE(near_all(x.grad().to_vector<double>(), want, tol, tol));
    }
  }
}

// The backward keeps only the tensor its derivative reads: GELU its input, exp its output, neg none.
TEST(ElementwiseUnary, BackwardKeepsOnlyWhatTheDerivativeReads) {
  Tensor x = leaf({4, 5}, 33);
  const auto defined = [](const Tensor& y) {
    std::vector<Tensor> kept;
    for (const Tensor& t : y.grad_fn()->saved_tensors()) {
      if (t.defined()) kept.push_back(t);
    }
    return kept;
  };
  const Tensor g = gelu(x), e = exp(x), n = neg(x);
  ASSERT_EQ(defined(g).size(), 1u);
  EXPECT_EQ(defined(g)[0].storage(), x.storage());
  ASSERT_EQ(defined(e).size(), 1u);
  EXPECT_EQ(defined(e)[0].storage(), e.storage());
  EXPECT_TRUE(defined(n).empty());
}

TEST(ElementwiseUnary, ClampAndReluGradientsAreZeroOutsideTheirRange) {
  Tensor x = from_vector<double>({-2.0, -0.5, 0.3, 2.0}, {4}).requires_grad_(true);
  sum(clamp(x, -1.0, 1.0)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 1, 1, 0}));
  x.set_grad(Tensor());
  sum(relu(x)).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 0, 1, 1}));
}

TEST(ElementwiseUnary, RejectsIntegerInputs) {
  Tensor i = arange(0, 4, 1, DType::I64);
  try {
    exp(i);
    FAIL() << "exp on i64 did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[exp]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("i64"), std::string::npos) << e.what();
  }
  EXPECT_THROW(clamp(from_vector<double>({1.0}, {1}), 1.0, -1.0), Error);
}

struct BinaryCase {
  std::string name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
  bool positive_b;  // keeps a divisor away from 0
};

std::vector<BinaryCase> binary_cases() {
  return {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, [](double a, double b) { return a + b; }, false},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, [](double a, double b) { return a - b; }, false},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, [](double a, double b) { return a * b; }, false},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, [](double a, double b) { return a / b; }, true},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); },
       [](double a, double b) { return std::max(a, b); }, false},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); },
       [](double a, double b) { return std::min(a, b); }, false},
      {"operator+", [](const Tensor& a, const Tensor& b) { return a + b; }, [](double a, double b) { return a + b; }, false},
      {"operator-", [](const Tensor& a, const Tensor& b) { return a - b; }, [](double a, double b) { return a - b; }, false},
      {"operator*", [](const Tensor& a, const Tensor& b) { return a * b; }, [](double a, double b) { return a * b; }, false},
      {"operator/", [](const Tensor& a, const Tensor& b) { return a / b; }, [](double a, double b) { return a / b; }, true},
  };
}

// Shape pairs covering equal shapes, broadcasting both ways, extra leading dims and () scalars.
const std::vector<std::pair<Shape, Shape>> kBroadcastPairs = {
    {{3, 4}, {3, 4}}, {{3, 1}, {1, 4}}, {{1, 4}, {3, 1}}, {{2, 3, 4}, {4}}, {{3}, {2, 1, 3}},
    {{}, {3, 4}},     {{3, 4}, {}},     {{2, 1, 4}, {3, 1}}, {{}, {}}};

Tensor b_leaf(const BinaryCase& c, const Shape& shape, uint64_t seed) {
  return domain_leaf(shape, seed, c.positive_b ? Domain::Positive : Domain::Any);
}

TEST(ElementwiseBinary, ForwardMatchesNaiveBroadcastLoops) {
  for (const BinaryCase& c : binary_cases()) {
    for (const auto& [sa, sb] : kBroadcastPairs) {
      SCOPED_TRACE(c.name + " " + shape_str(sa) + " with " + shape_str(sb));
      for (DType dt : {DType::F64, DType::F32}) {
        Tensor a = leaf(sa, 31).detach().to(dt), b = b_leaf(c, sb, 32).detach().to(dt);
        Tensor y = c.op(a, b);
        Shape want_shape;
        const auto want = naive_broadcast(a.to_vector<double>(), sa, b.to_vector<double>(), sb, c.ref, &want_shape);
        EXPECT_EQ(y.shape(), want_shape);
        EXPECT_EQ(y.dtype(), dt);
        const double tol = dt == DType::F64 ? 1e-14 : 1e-6;
        EXPECT_TRUE(near_all(y.to_vector<double>(), want, tol, tol));
      }
    }
  }
}

TEST(ElementwiseBinary, ForwardOnNonContiguousOperands) {
  for (const BinaryCase& c : binary_cases()) {
    SCOPED_TRACE(c.name);
    Tensor a = leaf({4, 3}, 33).detach().to(DType::F32).transpose(0, 1);    // (3, 4), strides (1, 3)
    Tensor b = b_leaf(c, {3, 8}, 34).detach().to(DType::F32).slice(1, 0, 8, 2);  // (3, 4), strides (8, 2)
    const auto want = naive_broadcast(a.to_vector<double>(), {3, 4}, b.to_vector<double>(), {3, 4}, c.ref);
    EXPECT_TRUE(near_all(c.op(a, b).to_vector<double>(), want, 1e-6, 1e-6));
  }
}

TEST(ElementwiseBinary, GradcheckSameShapeAndBroadcast) {
  for (const BinaryCase& c : binary_cases()) {
    for (const auto& [sa, sb] : kBroadcastPairs) {
      SCOPED_TRACE(c.name + " " + shape_str(sa) + " with " + shape_str(sb));
      EXPECT_TRUE(gradcheck([&](const Fn& x) { return c.op(x[0], x[1]); }, {leaf(sa, 41), b_leaf(c, sb, 42)}));
    }
  }
}

TEST(ElementwiseBinary, GradcheckNonContiguousAndExpandedInputs) {
  for (const BinaryCase& c : binary_cases()) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(gradcheck([&](const Fn& x) { return c.op(x[0].transpose(0, 1), x[1].slice(1, 1, 8, 2)); },
                          {leaf({4, 3}, 43), b_leaf(c, {3, 8}, 44)}));
    EXPECT_TRUE(gradcheck([&](const Fn& x) { return c.op(x[0].expand({2, 3, 4}), x[1].expand({2, 3, 4})); },
                          {leaf({3, 1}, 45), b_leaf(c, {4}, 46)}));
  }
}

// Add's backward hands the upstream gradient itself to operands of the output's shape (no copy);
// a broadcast operand gets the column sums.
TEST(ElementwiseBinary, AddBackwardPassesTheGradientThroughUncopied) {
  const Tensor a = leaf({6, 5}, 49), b = leaf({6, 5}, 50), bias = leaf({5}, 51);
  const Tensor y = add(a, b), z = add(a, bias);
  const Tensor g = leaf({6, 5}, 52).detach();
  NoGradGuard no_grad;
  const std::vector<Tensor> same = y.grad_fn()->apply(std::vector<Tensor>{g});
  const std::vector<Tensor> bcast = z.grad_fn()->apply(std::vector<Tensor>{g});
  ASSERT_EQ(same.size(), 2u);
  EXPECT_EQ(same[0].impl(), g.impl());
  EXPECT_EQ(same[1].impl(), g.impl());
  EXPECT_EQ(bcast[0].impl(), g.impl());
  const std::vector<double> gv = g.to_vector<double>();
  std::vector<double> col(5, 0.0);
  for (size_t i = 0; i < gv.size(); ++i) col[i % 5] += gv[i];
  EXPECT_TRUE(near_all(bcast[1].to_vector<double>(), col, 1e-12, 1e-12));
}

TEST(ElementwiseBinary, GradientOnlyForInputsThatRequireIt) {
  for (const BinaryCase& c : binary_cases()) {
    SCOPED_TRACE(c.name);
    Tensor constant = b_leaf(c, {1, 4}, 48).detach();
    EXPECT_TRUE(gradcheck([&](const Fn& x) { return c.op(x[0], constant); }, {leaf({3, 4}, 47)}));
    EXPECT_FALSE(constant.grad().defined());
  }
}

TEST(ElementwiseBinary, MaximumTiesSendGradientToFirstOperand) {
  Tensor a = from_vector<double>({1.0, 2.0, 3.0}, {3}).requires_grad_(true);
  Tensor b = from_vector<double>({1.0, 5.0, 3.0}, {3}).requires_grad_(true);
  sum(maximum(a, b)).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{1, 0, 1}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0, 1, 0}));
  a.set_grad(Tensor());
  b.set_grad(Tensor());
  sum(minimum(a, b)).backward();
  EXPECT_EQ(a.grad().to_vector<double>(), (std::vector<double>{1, 1, 1}));
  EXPECT_EQ(b.grad().to_vector<double>(), (std::vector<double>{0, 0, 0}));
}

TEST(ElementwiseBinary, IntegerArithmeticIsExactOnI64) {
  const int64_t big = (int64_t{1} << 53) + 1;  // not representable in double
  Tensor a = from_vector<int64_t>({big, -7, 3000000000, 4, 5, 6}, {2, 3});
  Tensor b = from_vector<int64_t>({2, 3, 3}, {3});
  Tensor s = add(a, b), d = sub(a, b), p = mul(a, b);
  EXPECT_EQ(s.dtype(), DType::I64);
  EXPECT_EQ(s.to_vector<int64_t>(), (std::vector<int64_t>{big + 2, -4, 3000000003, 6, 8, 9}));
  EXPECT_EQ(d.to_vector<int64_t>(), (std::vector<int64_t>{big - 2, -10, 2999999997, 2, 2, 3}));
  EXPECT_EQ(p.to_vector<int64_t>(), (std::vector<int64_t>{2 * big, -21, 9000000000, 8, 15, 18}));
  EXPECT_FALSE(s.requires_grad());
}

TEST(ElementwiseCompare, AllOpsMatchNaiveLoopsWithBroadcasting) {
  // Small integers make ties common so that Eq / Le / Ge are exercised.
  Tensor a = from_vector<float>({0, 1, 2, 1, 2, 0, 2, 2, 1, 0, 0, 1}, {3, 4});
  Tensor b = from_vector<float>({1, 0, 2, 1}, {1, 4});
  const std::vector<std::pair<CompareOp, std::function<double(double, double)>>> ops = {
      {CompareOp::Eq, [](double x, double y) { return double(x == y); }},
      {CompareOp::Ne, [](double x, double y) { return double(x != y); }},
      {CompareOp::Lt, [](double x, double y) { return double(x < y); }},
      {CompareOp::Le, [](double x, double y) { return double(x <= y); }},
      {CompareOp::Gt, [](double x, double y) { return double(x > y); }},
      {CompareOp::Ge, [](double x, double y) { return double(x >= y); }},
  };
  for (const auto& [op, ref] : ops) {
    SCOPED_TRACE(static_cast<int>(op));
    Tensor c = compare(a, b, op);
    EXPECT_EQ(c.dtype(), DType::Bool);
    EXPECT_EQ(c.to_vector<double>(), naive_broadcast(a.to_vector<double>(), {3, 4}, b.to_vector<double>(), {1, 4}, ref));
    EXPECT_EQ(compare(a, 1.0, op).to_vector<double>(),
              naive_broadcast(a.to_vector<double>(), {3, 4}, {1.0}, {}, ref));
    EXPECT_EQ(compare(a.to(DType::I64), b.to(DType::I64), op).to_vector<double>(), c.to_vector<double>());
  }
}

TEST(ElementwiseCompare, IntegersAgainstFractionalScalars) {
  Tensor i = from_vector<int64_t>({-1, 0, 1, 2}, {4});
  EXPECT_EQ(compare(i, 0.5, CompareOp::Ge).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 1, 1}));
  EXPECT_EQ(compare(i, 0.5, CompareOp::Gt).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 1, 1}));
  EXPECT_EQ(compare(i, 1.5, CompareOp::Lt).to_vector<uint8_t>(), (std::vector<uint8_t>{1, 1, 1, 0}));
  EXPECT_EQ(compare(i, -0.5, CompareOp::Le).to_vector<uint8_t>(), (std::vector<uint8_t>{1, 0, 0, 0}));
  EXPECT_EQ(compare(i, 0.5, CompareOp::Eq).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 0, 0}));
  EXPECT_EQ(compare(i, 1.0, CompareOp::Eq).to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 1, 0}));
}

TEST(ElementwiseCompare, IsNotDifferentiable) {
  Tensor a = leaf({3}, 51), b = leaf({3}, 52);
  Tensor c = compare(a, b, CompareOp::Lt);
  EXPECT_FALSE(c.requires_grad());
  EXPECT_EQ(c.grad_fn(), nullptr);
}

TEST(ElementwiseWhere, ForwardMatchesNaiveLoops) {
  Tensor cond = from_vector<uint8_t>({1, 0, 1}, {3, 1}).to(DType::Bool);
  Tensor a = from_vector<double>({10, 20, 30, 40}, {1, 4});
  Tensor b = scalar_tensor(-1.0, DType::F64);
  Tensor y = where(cond, a, b);
  EXPECT_EQ(y.shape(), (Shape{3, 4}));
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{10, 20, 30, 40, -1, -1, -1, -1, 10, 20, 30, 40}));
  // A u8 condition, non-contiguous operands.
  Tensor cu8 = from_vector<uint8_t>({0, 1, 1, 0, 0, 1}, {2, 3});
  Tensor p = arange(0, 6, 1, DType::F32).reshape({3, 2}).transpose(0, 1);  // [[0, 2, 4], [1, 3, 5]]
  Tensor q = full({2, 3}, 9.0);
  EXPECT_EQ(where(cu8, p, q).to_vector<float>(), (std::vector<float>{9, 2, 4, 9, 9, 5}));
}

TEST(ElementwiseWhere, Gradcheck) {
  Tensor cond = from_vector<uint8_t>({1, 0, 0, 1, 1, 0}, {3, 2}).to(DType::Bool);
  EXPECT_TRUE(gradcheck([&](const Fn& x) { return where(cond, x[0], x[1]); }, {leaf({3, 2}, 53), leaf({3, 2}, 54)}));
  // Broadcast: cond (3, 1), a (1, 4), b () all expand to (3, 4).
  Tensor c31 = from_vector<uint8_t>({1, 0, 1}, {3, 1}).to(DType::Bool);
  EXPECT_TRUE(gradcheck([&](const Fn& x) { return where(c31, x[0], x[1]); }, {leaf({1, 4}, 55), leaf({}, 56)}));
  // Non-contiguous a.
  EXPECT_TRUE(gradcheck([&](const Fn& x) { return where(cond, x[0].transpose(0, 1), x[1]); },
                        {leaf({2, 3}, 57), leaf({3, 2}, 58)}));
}

TEST(ElementwiseMaskedFill, ForwardAndGradcheck) {
  Tensor x = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor mask = from_vector<uint8_t>({0, 1, 0}, {3}).to(DType::Bool);
  EXPECT_EQ(masked_fill(x, mask, -5.0).to_vector<double>(), (std::vector<double>{1, -5, 3, 4, -5, 6}));
  EXPECT_EQ(masked_fill(x.to(DType::F32), mask, -INFINITY).to_vector<float>()[1], -INFINITY);
  EXPECT_TRUE(gradcheck([&](const Fn& t) { return masked_fill(t[0], mask, 7.0); }, {leaf({2, 3}, 59)}));
  Tensor g = leaf({2, 3}, 60);
  sum(masked_fill(g, mask, 7.0)).backward();
  EXPECT_EQ(g.grad().to_vector<double>(), (std::vector<double>{1, 0, 1, 1, 0, 1}));
  // The mask must broadcast to x, not the other way round.
  EXPECT_THROW(masked_fill(from_vector<double>({1, 2, 3}, {3}), from_vector<uint8_t>({1, 0, 1, 0, 1, 0}, {2, 3}), 0.0),
               Error);
}

TEST(ElementwiseInPlace, AddMulZeroUpdateValuesAndViews) {
  Tensor a = from_vector<float>({1, 2, 3, 4, 5, 6}, {2, 3});
  const void* storage = a.storage().get();
  add_(a, from_vector<float>({10, 20, 30}, {3}), 0.5);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{6, 12, 18, 9, 15, 21}));
  mul_(a, 2.0);
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{12, 24, 36, 18, 30, 42}));
  EXPECT_EQ(a.storage().get(), storage);
  // In-place through a strided view changes exactly the viewed elements of the base.
  Tensor col = a.slice(1, 0, 3, 2);  // columns 0 and 2
  add_(col, ones({2, 2}));
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{13, 24, 37, 19, 30, 43}));
  zero_(a.transpose(0, 1).narrow(0, 1, 1));  // column 1
  EXPECT_EQ(a.to_vector<float>(), (std::vector<float>{13, 0, 37, 19, 0, 43}));
  zero_(a);
  EXPECT_EQ(a.to_vector<float>(), std::vector<float>(6, 0.0f));
  Tensor i = from_vector<int64_t>({1, 2}, {2});
  add_(i, from_vector<int64_t>({5, 7}, {2}));
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{6, 9}));
  Tensor h = from_vector<float>({1, 2}, {2}).to(DType::BF16);
  add_(h, from_vector<float>({0.5f, 0.25f}, {2}).to(DType::BF16), 2.0);
  EXPECT_EQ(h.dtype(), DType::BF16);
  EXPECT_EQ(h.to_vector<float>(), (std::vector<float>{2.0f, 2.5f}));
}

TEST(ElementwiseInPlace, RefusesTensorsThatRequireGradInGradMode) {
  Tensor p = leaf({3}, 61);
  const std::vector<std::pair<std::string, std::function<void()>>> updates = {
      {"[add_]", [&] { add_(p, ones({3}, DType::F64)); }},
      {"[mul_]", [&] { mul_(p, 2.0); }},
      {"[zero_]", [&] { zero_(p); }},
  };
  const auto before = p.to_vector<double>();
  for (const auto& [name, update] : updates) {
    try {
      update();
      ADD_FAILURE() << name << " did not throw";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("requires grad"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(p.to_vector<double>(), before);
  NoGradGuard no_grad;
  add_(p, ones({3}, DType::F64), -1.0);
  EXPECT_DOUBLE_EQ(p.to_vector<double>()[0], before[0] - 1.0);
  EXPECT_TRUE(p.requires_grad());
}

// The strided loops keep up to 16 unmergeable dims; more is an error, not memory corruption.
TEST(ElementwiseLayout, ManyUnmergeableDims) {
  for (size_t nd : {16u, 17u}) {
    SCOPED_TRACE(nd);
    std::vector<int64_t> reversed(nd);
    for (size_t d = 0; d < nd; ++d) reversed[d] = static_cast<int64_t>(nd - 1 - d);
    Tensor x = mul(arange(0, static_cast<double>(int64_t{1} << nd), 1, DType::F32), 1e-5)
                   .reshape(Shape(nd, 2))
                   .permute(reversed);  // strides 1, 2, 4, ...: no two dims merge
    if (nd == 16) {
      const auto xv = x.to_vector<double>();
      const auto yv = neg(x).to_vector<double>();
      ASSERT_EQ(xv.size(), yv.size());
      for (size_t k = 0; k < xv.size(); k += 997) EXPECT_EQ(yv[k], -xv[k]);
      EXPECT_EQ(xv[1], static_cast<double>(1e-5f * 32768));
    } else {
      try {
        neg(x);
        ADD_FAILURE() << "no throw";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("at most 16 dims"), std::string::npos) << e.what();
      }
    }
  }
}

// 16-bit floats: the op computes in f32 and rounds once, so the result equals the f64 reference
// on the (already rounded) inputs to within one rounding of the output type.
TEST(ElementwiseReducedFloat, UnaryOpsKeepDtypeAndMatchReference) {
  for (DType dt : {DType::BF16, DType::F16}) {
    const double rtol = dt == DType::BF16 ? 1.0 / 128 : 1.0 / 1024;
    for (const UnaryCase& c : unary_cases()) {
      SCOPED_TRACE(c.name + " " + dtype_name(dt));
      Tensor x = from_vector<double>(domain_values(24, 71, c.domain, c.kinks), {4, 6}).to(dt).transpose(0, 1);
      Tensor y = c.op(x);
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_TRUE(near_all(y.to_vector<double>(), apply_ref(c, x.to_vector<double>()), 1e-6, rtol));
      // And close to the f32 result on the unrounded inputs, within the input's rounding too.
      Tensor x32 = from_vector<double>(domain_values(24, 71, c.domain, c.kinks), {4, 6}).to(DType::F32).transpose(0, 1);
      EXPECT_TRUE(near_all(y.to_vector<double>(), c.op(x32).to_vector<double>(), 4 * rtol, 4 * rtol));
    }
  }
}

TEST(ElementwiseReducedFloat, BinaryOpsKeepDtypeAndMatchReference) {
  for (DType dt : {DType::BF16, DType::F16}) {
    const double rtol = dt == DType::BF16 ? 1.0 / 128 : 1.0 / 1024;
    for (const BinaryCase& c : binary_cases()) {
      SCOPED_TRACE(c.name + " " + dtype_name(dt));
      Tensor a = leaf({3, 1}, 72).detach().to(dt), b = b_leaf(c, {1, 4}, 73).detach().to(dt);
      Tensor y = c.op(a, b);
      EXPECT_EQ(y.dtype(), dt);
      // Sums and differences can cancel: allow one rounding of the larger operand.
      EXPECT_TRUE(near_all(y.to_vector<double>(),
                           naive_broadcast(a.to_vector<double>(), {3, 1}, b.to_vector<double>(), {1, 4}, c.ref),
                           4 * rtol, rtol));
    }
  }
}

// A 16-bit backward computes in f32 and rounds once, like the f32 backward rounded afterwards,
// and allocates only its result (no f32 copies of dy, x or dx).
TEST(ElementwiseReducedFloat, UnaryBackwardRoundsOnceWithoutF32Copies) {
  for (DType dt : {DType::BF16, DType::F16}) {
    for (bool tanh_form : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + (tanh_form ? " tanh" : " erf"));
      const Tensor x = leaf({64, 513}, 81).detach().to(dt).requires_grad_(true);
      const Tensor x32 = x.detach().to(DType::F32).requires_grad_(true);
      const Tensor g = leaf({64, 513}, 82).detach().to(dt);
      const Tensor y = gelu(x, tanh_form), y32 = gelu(x32, tanh_form);
      NoGradGuard no_grad;
      const int64_t before = memory_stats(Device::cpu()).current_bytes;
      reset_peak_memory(Device::cpu());
      const Tensor dx = y.grad_fn()->apply(std::vector<Tensor>{g})[0];
      EXPECT_LE(memory_stats(Device::cpu()).peak_bytes - before, x.numel() * 2);
      EXPECT_EQ(dx.dtype(), dt);
      const Tensor want = y32.grad_fn()->apply(std::vector<Tensor>{g.to(DType::F32)})[0].to(dt);
      EXPECT_EQ(dx.to_vector<double>(), want.to_vector<double>());
    }
  }
}

TEST(ElementwiseReducedFloat, GradientsFlowInTheLeafDtype) {
  Tensor x = from_vector<float>({-1.0f, 0.5f, 2.0f}, {3}).to(DType::BF16).requires_grad_(true);
  sum(mul(exp(x), x).to(DType::F32)).backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().dtype(), DType::BF16);
  std::vector<double> want;
  for (double v : x.to_vector<double>()) want.push_back(std::exp(v) * (1.0 + v));
  EXPECT_TRUE(near_all(x.grad().to_vector<double>(), want, 1e-3, 3.0 / 128));
}

}  // namespace
}  // namespace longnet
