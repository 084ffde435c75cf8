// index_select, gather and scatter_add: forward against naive loops, gradients (contiguous and
// strided), deterministic accumulation, and bounds errors.
#include "framework/ops/index.h"

#include <gtest/gtest.h>
#include <omp.h>

#include "framework/ops/ops.h"
#include "tests/support/gradcheck.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::gradcheck;
using testing::leaf;

// Row-major offset of coordinates c in a 3-D shape.
size_t at3(const Shape& s, const int64_t c[3]) {
  return static_cast<size_t>((c[0] * s[1] + c[1]) * s[2] + c[2]);
}

// Calls f(c) for every coordinate of a 3-D shape in row-major order.
template <class F>
void for_3d(const Shape& s, F&& f) {
  for (int64_t i = 0; i < s[0]; ++i) {
    for (int64_t j = 0; j < s[1]; ++j) {
      for (int64_t k = 0; k < s[2]; ++k) {
        int64_t c[3] = {i, j, k};
        f(c);
      }
    }
  }
}

// A 1-D index with stride 2 holding `ids` (the odd slots hold junk that must not be read).
Tensor strided_ids(const std::vector<int64_t>& ids) {
  std::vector<int64_t> v;
  for (int64_t id : ids) {
    v.push_back(id);
    v.push_back(1000);
  }
  return from_vector<int64_t>(v, {static_cast<int64_t>(v.size())})
      .slice(0, 0, static_cast<int64_t>(v.size()), 2);
}

// Random ids in [0, limit) of the given shape (i64).
Tensor random_ids(const Shape& shape, int64_t limit, uint64_t seed) {
  Generator g(seed);
  return randint(0, limit, shape, DType::I64, Device::cpu(), &g);
}

TEST(Index, IndexSelectMatchesNaiveLoop) {
  Generator g(1);
  const Tensor x = randn({3, 4, 5}, DType::F64, Device::cpu(), &g);
  const Tensor xs = x.transpose(0, 2).contiguous().transpose(0, 2);  // same values, strided
  ASSERT_FALSE(xs.is_contiguous());
  const auto xv = x.to_vector<double>();
  const std::vector<int64_t> ids = {2, 0, 2, 1};
  for (int64_t dim = 0; dim < 3; ++dim) {
    Shape os = x.shape();
    os[static_cast<size_t>(dim)] = 4;
    std::vector<double> want;
    for_3d(os, [&](int64_t c[3]) {
      c[dim] = ids[static_cast<size_t>(c[dim])];
      want.push_back(xv[at3(x.shape(), c)]);
    });
    const Tensor expect = from_vector<double>(want, os);
    EXPECT_TRUE(all_close(index_select(x, dim, from_vector<int64_t>(ids, {4})), expect, 0.0, 0.0)) << dim;
    EXPECT_TRUE(
        all_close(index_select(x, dim - 3, from_vector<int32_t>({2, 0, 2, 1}, {4})), expect, 0.0, 0.0));
    EXPECT_TRUE(all_close(index_select(xs, dim, strided_ids(ids)), expect, 0.0, 0.0)) << dim;
  }
  // Integer and bf16 inputs are copied exactly.
  const Tensor xi = arange(0, 12, 1, DType::I64).reshape({3, 4});
  EXPECT_EQ(index_select(xi, 1, from_vector<int64_t>({3, 3, 0}, {3})).to_vector<int64_t>(),
            (std::vector<int64_t>{3, 3, 0, 7, 7, 4, 11, 11, 8}));
  const Tensor xb = x.to(DType::BF16);
  const Tensor ob = index_select(xb, 2, from_vector<int64_t>({4, 1}, {2}));
  EXPECT_EQ(ob.dtype(), DType::BF16);
  EXPECT_TRUE(all_close(ob.to(DType::F64),
                        index_select(xb.to(DType::F64), 2, from_vector<int64_t>({4, 1}, {2})), 0.0, 0.0));
}

TEST(Index, IndexSelectGradcheck) {
  const Tensor ids = from_vector<int64_t>({1, 3, 1, 1, 0}, {5});
  for (int64_t dim = 0; dim < 3; ++dim) {
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return index_select(x[0], dim, ids); },
                          {leaf({4, 4, 4}, 1)}))
        << dim;
  }
  EXPECT_TRUE(
      gradcheck([&](const std::vector<Tensor>& x) { return index_select(x[0].transpose(0, 2), 1, ids); },
                {leaf({3, 4, 2}, 2)}));
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& x) {
        return index_select(x[0].slice(1, 0, 8, 2), 1, strided_ids({2, 2, 0}));
      },
      {leaf({3, 8}, 3)}));
}

TEST(Index, GatherMatchesNaiveLoop) {
  Generator g(2);
  const Tensor x = randn({3, 5, 4}, DType::F64, Device::cpu(), &g);
  const auto xv = x.to_vector<double>();
  for (int64_t dim = 0; dim < 3; ++dim) {
    Shape is = {2, 3, 3};  // no larger than x off dim; larger than x along dim 0
    const Tensor idx = random_ids(is, x.size(dim), 10 + static_cast<uint64_t>(dim));
    const auto iv = idx.to_vector<int64_t>();
    std::vector<double> want;
    for_3d(is, [&](int64_t c[3]) {
      const size_t here = at3(is, c);
      c[dim] = iv[here];
      want.push_back(xv[at3(x.shape(), c)]);
    });
    const Tensor expect = from_vector<double>(want, is);
    EXPECT_TRUE(all_close(gather(x, dim, idx), expect, 0.0, 0.0)) << dim;
    EXPECT_TRUE(all_close(gather(x.transpose(0, 1).contiguous().transpose(0, 1), dim, idx.to(DType::I32)),
                          expect, 0.0, 0.0))
        << dim;
    // A strided index.
    const Tensor idx_t = idx.transpose(0, 2).contiguous().transpose(0, 2);
    EXPECT_TRUE(all_close(gather(x, dim, idx_t), expect, 0.0, 0.0)) << dim;
  }
}

TEST(Index, GatherGradcheck) {
  // Repeated ids make the backward accumulate.
  const Tensor idx = from_vector<int64_t>({0, 2, 2, 1, 1, 1, 3, 0, 3, 2, 0, 0}, {3, 4});
  EXPECT_TRUE(
      gradcheck([&](const std::vector<Tensor>& x) { return gather(x[0], 1, idx); }, {leaf({3, 5}, 4)}));
  const Tensor idx0 = from_vector<int64_t>({0, 2, 2, 1, 1, 1, 0, 0}, {2, 4});
  EXPECT_TRUE(
      gradcheck([&](const std::vector<Tensor>& x) { return gather(x[0], 0, idx0); }, {leaf({3, 4}, 5)}));
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return gather(x[0].transpose(0, 1), 1, idx); },
                        {leaf({5, 3}, 6)}));
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& x) {
        return gather(x[0].slice(1, 0, 10, 2), 1, idx.transpose(0, 1).contiguous().transpose(0, 1));
      },
      {leaf({3, 10}, 7)}));
}

TEST(Index, ScatterAddMatchesNaiveLoop) {
  Generator g(3);
  const Tensor x = randn({4, 5, 3}, DType::F64, Device::cpu(), &g);
  const Tensor src = randn({3, 6, 3}, DType::F64, Device::cpu(), &g);  // larger than the index
  const auto sv = src.to_vector<double>();
  for (int64_t dim = 0; dim < 3; ++dim) {
    const Shape is = {3, 4, 2};
    const Tensor idx = random_ids(is, x.size(dim), 20 + static_cast<uint64_t>(dim));
    const auto iv = idx.to_vector<int64_t>();
    auto want = x.to_vector<double>();
    for_3d(is, [&](int64_t c[3]) {
      const size_t here = at3(is, c);
      const double v = sv[at3(src.shape(), c)];
      c[dim] = iv[here];
      want[at3(x.shape(), c)] += v;
    });
    const Tensor expect = from_vector<double>(want, x.shape());
    EXPECT_TRUE(all_close(scatter_add(x, dim, idx, src), expect, 1e-12, 0.0)) << dim;
    EXPECT_TRUE(all_close(scatter_add(x.transpose(0, 2).contiguous().transpose(0, 2), dim,
                                      idx.transpose(1, 2).contiguous().transpose(1, 2).to(DType::I32),
                                      src.transpose(0, 1).contiguous().transpose(0, 1)),
                          expect, 1e-12, 0.0))
        << dim;
  }
  // The input is not modified.
  const Tensor before = x.clone();
  scatter_add(x, 0, zeros({1, 1, 1}, DType::I64), ones({1, 1, 1}, DType::F64));
  EXPECT_TRUE(all_close(x, before, 0.0, 0.0));
}

TEST(Index, ScatterAddGradcheck) {
  const Tensor idx = from_vector<int64_t>({0, 2, 2, 1, 1, 1, 0, 0}, {2, 4});
  auto f = [&](const std::vector<Tensor>& x) { return scatter_add(x[0], 1, idx, x[1]); };
  EXPECT_TRUE(gradcheck(f, {leaf({3, 4}, 8), leaf({2, 4}, 9)}));
  // src larger than the index (its extra entries get zero gradient), along dim 0.
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return scatter_add(x[0], 0, idx, x[1]); },
                        {leaf({3, 4}, 10), leaf({3, 5}, 11)}));
  // Strided x and src.
  auto h = [&](const std::vector<Tensor>& x) {
    return scatter_add(x[0].transpose(0, 1), 1, idx, x[1].slice(1, 0, 8, 2));
  };
  EXPECT_TRUE(gradcheck(h, {leaf({4, 3}, 12), leaf({2, 8}, 13)}));
  // Only src needs a gradient.
  const Tensor base = zeros({3, 4}, DType::F64);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return scatter_add(base, 1, idx, x[0]); },
                        {leaf({2, 4}, 14)}));
}

TEST(Index, AccumulationIsBitwiseIndependentOfThreadCount) {
  // Large enough to run in parallel, few targets so many values add into each; along the last
  // dim (lines are rows) and along the first (lines are columns).
  const Tensor idx = random_ids({256, 512}, 8, 30);
  Generator g(31);
  const Tensor src = randn({256, 512}, DType::F32, Device::cpu(), &g);
  const Tensor x = zeros({256, 8});
  const Tensor idx0 = random_ids({2048, 64}, 8, 33);
  const Tensor src0 = randn({2048, 64}, DType::F32, Device::cpu(), &g);
  const Tensor x0 = zeros({8, 64});
  const Tensor sel = random_ids({4096}, 16, 32);
  const Tensor table = zeros({16, 32}).requires_grad_(true);
  const Tensor gsel = randn({4096, 32}, DType::F32, Device::cpu(), &g);
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    auto a = scatter_add(x, 1, idx, src).to_vector<float>();
    const auto a0 = scatter_add(x0, 0, idx0, src0).to_vector<float>();
    a.insert(a.end(), a0.begin(), a0.end());
    table.set_grad(Tensor());
    index_select(table, 0, sel).backward(gsel);
    auto b = table.grad().to_vector<float>();
    omp_set_num_threads(saved);
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const auto one = run(1);
  EXPECT_EQ(one, run(2));
  EXPECT_EQ(one, run(3));
}

TEST(Index, ErrorsShowOpIndexAndShapes) {
  const Tensor x = zeros({3, 4});
  const std::string sel = testing::error_message([&] { index_select(x, 1, from_vector<int64_t>({0, 4}, {2})); });
  EXPECT_NE(sel.find("[index_select] index 4 out of range for dim 1 of size 4 (input (3, 4), index (2))"),
            std::string::npos)
      << sel;
  const std::string neg = testing::error_message([&] { index_select(x, 0, from_vector<int32_t>({-1}, {1})); });
  EXPECT_NE(neg.find("index -1 out of range"), std::string::npos) << neg;
  const std::string sel2d = testing::error_message([&] { index_select(x, 0, zeros({1, 1}, DType::I64)); });
  EXPECT_NE(sel2d.find("[index_select] index must be 1-D, got shape (1, 1)"), std::string::npos) << sel2d;
  const std::string fl = testing::error_message([&] { gather(x, 0, zeros({3, 4})); });
  EXPECT_NE(fl.find("[gather] index must be i32 or i64, got f32"), std::string::npos) << fl;
  const std::string gd = testing::error_message([&] { gather(x, 0, zeros({3}, DType::I64)); });
  EXPECT_NE(gd.find("[gather] index (3) must have as many dims as the input (3, 4)"), std::string::npos)
      << gd;
  const std::string gs = testing::error_message([&] { gather(x, 0, zeros({2, 5}, DType::I64)); });
  EXPECT_NE(gs.find("[gather] index (2, 5) is larger than the input (3, 4) in dim 1"), std::string::npos)
      << gs;
  const std::string gr = testing::error_message([&] { gather(x, 1, full({2, 2}, 7, DType::I64)); });
  EXPECT_NE(gr.find("[gather] index 7 out of range for dim 1 of size 4"), std::string::npos) << gr;
  const std::string sd = testing::error_message([&] {
    scatter_add(x, 0, zeros({2, 2}, DType::I64), zeros({2, 2}, DType::F64));
  });
  EXPECT_NE(sd.find("[scatter_add] dtype mismatch: f32 (3, 4) vs f64 (2, 2)"), std::string::npos) << sd;
  const std::string ss = testing::error_message([&] { scatter_add(x, 0, zeros({2, 3}, DType::I64), zeros({2, 2})); });
  EXPECT_NE(ss.find("[scatter_add] index (2, 3) is larger than src (2, 2) or input (3, 4) in dim 1"),
            std::string::npos)
      << ss;
  const std::string sr = testing::error_message([&] { scatter_add(x, 0, full({1, 1}, 3, DType::I64), zeros({1, 1})); });
  EXPECT_NE(sr.find("[scatter_add] index 3 out of range for dim 0 of size 3"), std::string::npos) << sr;
  EXPECT_THROW(index_select(x, 2, from_vector<int64_t>({0}, {1})), Error);
}

}  // namespace
}  // namespace longnet
