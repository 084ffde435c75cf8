// View ops: geometry (shape, strides, offset), shared storage, gradients, and the copies that
// reshape / contiguous make only when the layout forces them.
#include <gtest/gtest.h>

#include "framework/ops/ops.h"
#include "tests/framework/reference.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::gradcheck;
using testing::leaf;

using Fn = std::vector<Tensor>;

// 0, 1, ..., 23 as a contiguous (2, 3, 4) f64 tensor.
Tensor iota234() { return arange(0, 24, 1, DType::F64).reshape({2, 3, 4}); }

// The value of t at a multi-index, read through its strides from the storage.
double at(const Tensor& t, const std::vector<int64_t>& idx) {
  int64_t off = t.offset();
  for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * t.strides()[d];
  return static_cast<const double*>(t.storage()->data())[off];
}

TEST(View, GeometryOfEveryView) {
  Tensor x = iota234();
  struct Case {
    const char* name;
    Tensor v;
    Shape shape;
    Strides strides;
    int64_t offset;
  };
  const std::vector<Case> cases = {
      {"view", x.view({6, 4}), {6, 4}, {4, 1}, 0},
      {"view -1", x.view({-1, 2}), {12, 2}, {2, 1}, 0},
      {"reshape", x.reshape({4, 6}), {4, 6}, {6, 1}, 0},
      {"permute", x.permute({2, 0, 1}), {4, 2, 3}, {1, 12, 4}, 0},
      {"transpose", x.transpose(-1, 0), {4, 3, 2}, {1, 4, 12}, 0},
      {"slice", x.slice(2, 1, 4, 2), {2, 3, 2}, {12, 4, 2}, 1},
      {"slice negative", x.slice(1, -2, 3), {2, 2, 4}, {12, 4, 1}, 4},
      {"slice past end", x.slice(2, 3, 100, 3), {2, 3, 1}, {12, 4, 3}, 3},
      {"narrow", x.narrow(1, 1, 2), {2, 2, 4}, {12, 4, 1}, 4},
      {"expand", x.narrow(1, 0, 1).expand({5, 2, 3, 4}), {5, 2, 3, 4}, {0, 12, 0, 1}, 0},
      {"expand -1", x.narrow(2, 0, 1).expand({-1, -1, 5}), {2, 3, 5}, {12, 4, 0}, 0},
      {"squeeze", x.narrow(1, 2, 1).squeeze(1), {2, 4}, {12, 1}, 8},
      {"unsqueeze", x.unsqueeze(-1), {2, 3, 4, 1}, {12, 4, 1, 1}, 0},
      {"unsqueeze front", x.transpose(0, 2).unsqueeze(0), {1, 4, 3, 2}, {0, 1, 4, 12}, 0},
      {"flatten", x.flatten(), {24}, {1}, 0},
      {"flatten 1..2", x.flatten(1, 2), {2, 12}, {12, 1}, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EQ(c.v.shape(), c.shape);
    if (c.v.storage() == x.storage()) {
      // The stride of a size-1 dim is never used, so it is not pinned down.
      for (size_t d = 0; d < c.shape.size() && c.v.shape() == c.shape; ++d) {
        if (c.shape[d] != 1) {
          EXPECT_EQ(c.v.strides()[d], c.strides[d]) << "dim " << d;
        }
      }
      EXPECT_EQ(c.v.offset(), c.offset);
    } else {
      ADD_FAILURE() << "expected a view sharing the input's storage";
    }
  }
  // Values read through the strides agree with the index arithmetic of each view.
  Tensor p = x.permute({2, 0, 1});
  EXPECT_EQ(at(p, {3, 1, 2}), at(x, {1, 2, 3}));
  Tensor s = x.slice(2, 1, 4, 2);
  EXPECT_EQ(at(s, {1, 2, 1}), at(x, {1, 2, 3}));
  EXPECT_EQ(s.to_vector<double>()[1], 3.0);
}

TEST(View, WritesThroughAViewReachTheBase) {
  Tensor x = iota234();
  fill_(x.transpose(0, 2).slice(0, 0, 4, 3).narrow(2, 1, 1), -1.0);  // x[1, :, 0] and x[1, :, 3]
  const auto v = x.to_vector<double>();
  for (int64_t j = 0; j < 3; ++j) {
    EXPECT_EQ(v[static_cast<size_t>(12 + 4 * j)], -1.0);
    EXPECT_EQ(v[static_cast<size_t>(12 + 4 * j + 3)], -1.0);
    EXPECT_EQ(v[static_cast<size_t>(4 * j)], static_cast<double>(4 * j));
  }
}

TEST(View, NonViewableLayoutThrowsAndReshapeCopies) {
  Tensor x = iota234();
  Tensor t = x.transpose(1, 2);  // (2, 4, 3)
  try {
    t.view({2, 12});
    FAIL() << "view of a non-viewable layout did not throw";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("[view]"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 4, 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("reshape"), std::string::npos) << m;
  }
  EXPECT_THROW(x.slice(2, 0, 3).view({18}), Error);
  // A step-2 slice of the innermost dim is still evenly strided, hence viewable as 1-D.
  EXPECT_EQ(x.slice(2, 0, 4, 2).view({12}).strides(), (Strides{2}));
  // Some non-contiguous layouts are still viewable: splitting or merging within a chunk.
  Tensor split = t.view({2, 2, 2, 3});
  EXPECT_EQ(split.storage(), x.storage());
  EXPECT_EQ(split.strides(), (Strides{12, 2, 1, 4}));
  Tensor merged = x.slice(2, 0, 4, 2).view({6, 2});
  EXPECT_EQ(merged.strides(), (Strides{4, 2}));
  EXPECT_EQ(merged.to_vector<double>()[3], 6.0);
  Tensor r = t.reshape({2, 12});
  EXPECT_NE(r.storage(), x.storage());
  EXPECT_TRUE(r.is_contiguous());
  EXPECT_EQ(r.to_vector<double>(), t.contiguous().to_vector<double>());
  EXPECT_EQ(r.to_vector<double>()[1], 4.0);
}

TEST(View, ContiguousCopiesOnlyWhenNeeded) {
  Tensor x = iota234();
  EXPECT_TRUE(x.is_contiguous());
  EXPECT_EQ(x.contiguous().impl(), x.impl());
  // Size-1 dims do not break contiguity, whatever their stride.
  EXPECT_TRUE(x.narrow(0, 1, 1).is_contiguous());
  EXPECT_TRUE(x.unsqueeze(1).is_contiguous());
  Tensor t = x.permute({1, 2, 0});
  EXPECT_FALSE(t.is_contiguous());
  Tensor c = t.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_NE(c.storage(), x.storage());
  EXPECT_EQ(c.strides(), (Strides{8, 2, 1}));
  EXPECT_EQ(c.to_vector<double>(), t.to_vector<double>());
  EXPECT_EQ(c.to_vector<double>()[1], 12.0);
  EXPECT_FALSE(x.expand({3, 2, 3, 4}).is_contiguous());
}

TEST(View, ShapeErrors) {
  Tensor x = iota234();
  EXPECT_THROW(x.view({5, 5}), Error);
  EXPECT_THROW(x.view({-1, -1}), Error);
  EXPECT_THROW(x.reshape({-1, 5}), Error);
  EXPECT_THROW(x.permute({0, 1}), Error);
  EXPECT_THROW(x.permute({0, 1, 1}), Error);
  EXPECT_THROW(x.transpose(0, 3), Error);
  EXPECT_THROW(x.slice(0, 0, 2, 0), Error);
  EXPECT_THROW(x.narrow(2, 3, 2), Error);
  EXPECT_THROW(x.expand({2, 5, 4}), Error);
  EXPECT_THROW(x.expand({3, 4}), Error);
  EXPECT_THROW(x.squeeze(1), Error);
  EXPECT_THROW(x.unsqueeze(4), Error);
  EXPECT_THROW(x.flatten(2, 1), Error);
}

TEST(View, GradcheckEveryView) {
  // Each view is followed by a product with a fixed random tensor, so that the gradient reaching
  // the view is non-uniform and flows through an elementwise backward into the view's backward.
  const std::vector<std::pair<const char*, std::function<Tensor(const Tensor&)>>> views = {
      {"view", [](const Tensor& x) { return x.view({6, 4}); }},
      {"reshape of transposed", [](const Tensor& x) { return x.transpose(0, 1).reshape({12, 2}); }},
      {"permute", [](const Tensor& x) { return x.permute({2, 0, 1}); }},
      {"transpose", [](const Tensor& x) { return x.transpose(0, 2); }},
      {"slice step", [](const Tensor& x) { return x.slice(2, 1, 4, 2); }},
      {"slice of slice", [](const Tensor& x) { return x.slice(2, 0, 4, 2).slice(1, 1, 3); }},
      {"narrow", [](const Tensor& x) { return x.narrow(1, 1, 2); }},
      {"expand", [](const Tensor& x) { return x.narrow(1, 0, 1).expand({3, 2, 3, 4}); }},
      {"squeeze", [](const Tensor& x) { return x.narrow(1, 2, 1).squeeze(1); }},
      {"unsqueeze", [](const Tensor& x) { return x.transpose(0, 1).unsqueeze(1); }},
      {"flatten", [](const Tensor& x) { return x.permute({1, 0, 2}).flatten(0, 1); }},
      {"contiguous", [](const Tensor& x) { return x.transpose(1, 2).contiguous(); }},
      {"clone", [](const Tensor& x) { return x.clone(); }},
  };
  for (const auto& [name, fn] : views) {
    SCOPED_TRACE(name);
    Tensor probe = fn(leaf({2, 3, 4}, 1).detach());
    Generator g(99);
    Tensor weight = randn(probe.shape(), DType::F64, Device::cpu(), &g);
    EXPECT_TRUE(gradcheck([&](const Fn& x) { return mul(fn(x[0]), weight); }, {leaf({2, 3, 4}, 2)}));
  }
}

TEST(View, SumTo) {
  Tensor g = arange(0, 24, 1, DType::F64).reshape({2, 3, 4});
  EXPECT_EQ(sum_to(g, {2, 3, 4}).impl(), g.impl());
  EXPECT_EQ(sum_to(g, {3, 4}).to_vector<double>(),
            (std::vector<double>{12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34}));
  Tensor r = sum_to(g, {2, 1, 4});
  EXPECT_EQ(r.shape(), (Shape{2, 1, 4}));
  EXPECT_EQ(r.to_vector<double>(), (std::vector<double>{12, 15, 18, 21, 48, 51, 54, 57}));
  EXPECT_EQ(sum_to(g, {3, 1}).to_vector<double>(), (std::vector<double>{60, 92, 124}));
  EXPECT_EQ(sum_to(g, {}).shape(), Shape{});
  EXPECT_EQ(sum_to(g, {}).item(), 276.0);
  EXPECT_EQ(sum_to(g, {1}).to_vector<double>(), (std::vector<double>{276}));
  EXPECT_TRUE(gradcheck([](const Fn& x) { return sum_to(x[0], {3, 1}); }, {leaf({2, 3, 4}, 3)}));
}

// Every pattern of reduced dims: leading dims, middle dims kept as size 1, leading and middle
// together, the first and last dims (not one run), size-1 dims of the gradient, and a scalar.
TEST(View, SumToGradcheckEveryReducedDimPattern) {
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{2, 3, 4}, {4}},       {{2, 3, 4}, {3, 4}},    {{1, 5, 4}, {4}},     {{2, 3, 4}, {2, 1, 4}},
      {{2, 3, 4}, {1, 1, 4}}, {{2, 3, 1, 4}, {3, 1, 1}}, {{2, 3, 4}, {1, 3, 1}}, {{2, 3, 4}, {}},
      {{3, 1, 4}, {1, 1}}};
  for (const auto& [from, to] : cases) {
    SCOPED_TRACE(shape_str(from) + " -> " + shape_str(to));
    EXPECT_TRUE(gradcheck([&to](const Fn& x) { return sum_to(x[0], to); }, {leaf(from, 4)}));
  }
}

// A bias gradient's shape: (1, N, D) summed to (D) against a loop, without copying the gradient.
TEST(View, SumToOverLeadingDimsMatchesLoopsWithoutACopy) {
  const int64_t n = 1000, d = 300;
  Generator gen(5);
  const Tensor g = randn({1, n, d}, DType::F32, Device::cpu(), &gen);
  const std::vector<float> gv = g.to_vector<float>();
  std::vector<double> want(static_cast<size_t>(d), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < d; ++j) want[static_cast<size_t>(j)] += gv[static_cast<size_t>(i * d + j)];
  }
  const int64_t before = memory_stats(Device::cpu()).current_bytes;
  reset_peak_memory(Device::cpu());
  const Tensor s = sum_to(g, {d});
  EXPECT_LE(memory_stats(Device::cpu()).peak_bytes - before, d * 4);
  EXPECT_EQ(s.shape(), (Shape{d}));
  EXPECT_TRUE(testing::near_all(s.to_vector<double>(), want, 1e-4, 1e-5));
}

}  // namespace
}  // namespace longnet
