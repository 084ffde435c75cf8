// CPU-versus-CUDA parity of embedding, dropout, index_select / gather / scatter_add and
// cat / stack / split, forward and backward, in f32 and bf16, on contiguous and non-contiguous
// inputs; plus the bitwise guarantees (embedding backward, dropout mask) and GPU range errors.
#include <gtest/gtest.h>

#include "framework/ops/dropout.h"
#include "framework/ops/embedding.h"
#include "framework/ops/index.h"
#include "framework/ops/ops.h"
#include "framework/ops/shape_ops.h"
#include "tests/support/gpu.h"
#include "tests/support/parity.h"

namespace longnet {
namespace {

using testing::all_close;
using testing::cpu_cuda_parity;
using testing::TensorFn;

const Device kGpu = Device::cuda(0);

Tensor input(const Shape& shape, uint64_t seed) {
  Generator g(seed);
  return randn(shape, DType::F32, Device::cpu(), &g);
}

Tensor random_ids(const Shape& shape, int64_t limit, uint64_t seed, DType dtype = DType::I64) {
  Generator g(seed);
  return randint(0, limit, shape, dtype, Device::cpu(), &g);
}

// Ids of shape (rows, cols): uniform over the vocabulary, except that every third one
// is one of five hot ids (hundreds of repeats each, as padding or frequent tokens give), and the
// last id of the vocabulary appears too.
Tensor embedding_ids(int64_t rows, int64_t cols, int64_t vocab, uint64_t seed) {
  std::vector<int64_t> v = random_ids({rows * cols}, vocab, seed).to_vector<int64_t>();
  for (size_t i = 0; i < v.size(); i += 3) v[i] = static_cast<int64_t>((i / 3) % 5);
  v[1] = vocab - 1;
  return from_vector<int64_t>(v, {rows, cols});
}

const char* layout_name(bool non_contiguous) { return non_contiguous ? "non-contiguous" : "contiguous"; }

TEST(CudaIndex, EmbeddingParityGpt2SizedTable) {
  LN_REQUIRE_GPU();
  const int64_t vocab = 50257;
  const TensorFn fn = [](const std::vector<Tensor>& a) { return embedding(a[0], a[1]); };
  for (int64_t dim : {768, 771}) {  // 771: rows are not whole 16-byte packs
    const Tensor w = input({vocab, dim}, 1);
    const Tensor ids = embedding_ids(6, 500, vocab, 2);
    for (DType dt : {DType::F32, DType::BF16}) {
      for (bool nc : {false, true}) {
        EXPECT_TRUE(cpu_cuda_parity(fn, {w, ids}, dt, true, nc))
            << "D = " << dim << " " << dtype_name(dt) << " " << layout_name(nc);
      }
    }
  }
}

// The GPU backward sums each id's rows in position order in f32 like the CPU kernel, so both
// agree bit for bit, and the GPU result does not change from run to run.
TEST(CudaIndex, EmbeddingBackwardIsBitwiseCpuEqualAndReproducible) {
  LN_REQUIRE_GPU();
  const int64_t vocab = 3001, dim = 96;
  for (DType dt : {DType::F32, DType::BF16}) {
    for (DType id_dtype : {DType::I64, DType::I32}) {
      const Tensor ids = embedding_ids(8, 512, vocab, 3).to(id_dtype);
      const Tensor w = input({vocab, dim}, 4).to(dt);
      const Tensor up = input({8, 512, dim}, 5).to(dt);
      auto grad = [&](Device dev) {
        Tensor leaf = w.to(dev).detach();
        leaf.requires_grad_(true);
        const Tensor out = embedding(leaf, ids.to(dev));
        out.backward(up.to(dev));
        return std::make_pair(out.to(Device::cpu()), leaf.grad().to(Device::cpu()));
      };
      const auto cpu = grad(Device::cpu());
      const auto gpu = grad(kGpu);
      const char* what = dtype_name(dt);
      EXPECT_TRUE(all_close(gpu.first.to(DType::F64), cpu.first.to(DType::F64), 0.0, 0.0)) << what;
      EXPECT_TRUE(all_close(gpu.second.to(DType::F64), cpu.second.to(DType::F64), 0.0, 0.0)) << what;
      EXPECT_TRUE(all_close(grad(kGpu).second.to(DType::F64), gpu.second.to(DType::F64), 0.0, 0.0)) << what;
    }
  }
}

// Column slices of a table: one whose rows start 16-byte aligned (vector path) and one whose rows
// do not (element path); both must read exactly the CPU's values.
TEST(CudaIndex, EmbeddingVectorAndElementPaths) {
  LN_REQUIRE_GPU();
  const Tensor ids = embedding_ids(3, 41, 257, 6);
  for (DType dt : {DType::F32, DType::BF16, DType::F64}) {
    const Tensor w = input({257, 64}, 7).to(dt);
    const Tensor wg = w.to(kGpu);
    for (int64_t start : {8, 1}) {
      const Tensor want = embedding(w.narrow(1, start, 16), ids);
      const Tensor got = embedding(wg.narrow(1, start, 16), ids.to(kGpu));
      EXPECT_TRUE(all_close(got.to(Device::cpu()).to(DType::F64), want.to(DType::F64), 0.0, 0.0))
          << dtype_name(dt) << " columns from " << start;
    }
  }
  // No ids at all: an empty lookup, and an all-zero gradient.
  const Tensor wg = input({5, 8}, 8).to(kGpu).requires_grad_(true);
  const Tensor none = embedding(wg, zeros({0}, DType::I64, kGpu));
  EXPECT_EQ(none.shape(), (Shape{0, 8}));
  none.backward(zeros({0, 8}, DType::F32, kGpu));
  EXPECT_TRUE(all_close(wg.grad().to(Device::cpu()), zeros({5, 8}), 0.0, 0.0));
}

TEST(CudaIndex, EmbeddingOutOfRangeIdsThrowOnGpu) {
  LN_REQUIRE_GPU();
  const Tensor w = zeros({7, 4}, DType::F32, kGpu);
  // The first bad position is reported, whichever thread found a bad id first.
  const std::string m = testing::error_message([&] { embedding(w, from_vector<int64_t>({1, 9, -1, 7}, {4}).to(kGpu)); });
  EXPECT_NE(m.find("[embedding] id 9 out of range for V = 7 (weight (7, 4), indices (4))"), std::string::npos)
      << m;
  const std::string neg = testing::error_message([&] { embedding(w, from_vector<int32_t>({0, -3}, {2}).to(kGpu)); });
  EXPECT_NE(neg.find("[embedding] id -3 out of range"), std::string::npos) << neg;
  // The device is still usable afterwards.
  EXPECT_EQ(embedding(w, from_vector<int64_t>({6}, {1}).to(kGpu)).shape(), (Shape{1, 4}));
}

// Same seed and offset: the GPU keeps exactly the elements the CPU keeps, and scales them to the
// same values; the backward applies that mask.
TEST(CudaIndex, DropoutMaskIsBitIdenticalToCpu) {
  LN_REQUIRE_GPU();
  const Tensor base = input({131, 67}, 9);  // 8777 elements: the last Philox block is partial
  const Tensor flat = input({10001}, 10);
  struct View {
    const char* name;
    std::function<Tensor(const Tensor&)> view;
  };
  const std::vector<View> views = {
      {"contiguous", [](const Tensor& t) { return t; }},
      {"transposed", [](const Tensor& t) { return t.transpose(0, 1); }},
      {"sliced", [](const Tensor& t) { return t.slice(1, 1, 67, 3); }},
  };
  for (double p : {0.1, 0.5, 0.9}) {
    for (DType dt : {DType::F32, DType::BF16}) {
      for (const View& v : views) {
        Generator gc(1234), gg(1234);
        gc.reserve(5);
        gg.reserve(5);
        Tensor leaf_c = base.to(dt).detach(), leaf_g = base.to(dt).to(kGpu);
        leaf_c.requires_grad_(true);
        leaf_g.requires_grad_(true);
        const Tensor yc = dropout(v.view(leaf_c), p, true, &gc);
        const Tensor yg = dropout(v.view(leaf_g), p, true, &gg);
        EXPECT_EQ(gc.state().offset, gg.state().offset);
        const auto a = yc.to(DType::F64).to_vector<double>();
        const auto b = yg.to(Device::cpu()).to(DType::F64).to_vector<double>();
        ASSERT_EQ(a.size(), b.size());
        int64_t mismatches = 0, kept = 0;
        for (size_t i = 0; i < a.size(); ++i) {
          kept += a[i] != 0.0;
          if (a[i] != b[i]) {
            if (++mismatches <= 5) ADD_FAILURE() << "element " << i << ": cpu " << a[i] << ", gpu " << b[i];
          }
        }
        EXPECT_EQ(mismatches, 0) << "p = " << p << " " << dtype_name(dt) << " " << v.name;
        EXPECT_NEAR(static_cast<double>(kept) / static_cast<double>(a.size()), 1.0 - p, 0.03) << "p = " << p;
        const Tensor up = input(yc.shape(), 11).to(dt);
        yc.backward(up);
        yg.backward(up.to(kGpu));
        const Tensor dx_gpu = leaf_g.grad().to(Device::cpu()).to(DType::F64);
        EXPECT_TRUE(all_close(dx_gpu, leaf_c.grad().to(DType::F64), 0.0, 0.0))
            << "backward, p = " << p << " " << dtype_name(dt) << " " << v.name;
      }
      // Contiguous but not 16-byte aligned (element path) and a tail of one element.
      Generator gc(77), gg(77);
      const Tensor xc = flat.to(dt).narrow(0, 1, 10000 - 3);
      const Tensor yc = dropout(xc, p, true, &gc), yg = dropout(xc.to(kGpu), p, true, &gg);
      EXPECT_TRUE(all_close(yg.to(Device::cpu()).to(DType::F64), yc.to(DType::F64), 0.0, 0.0))
          << "unaligned, p = " << p << " " << dtype_name(dt);
    }
  }
}

TEST(CudaIndex, DropoutParityThroughHelper) {
  LN_REQUIRE_GPU();
  const TensorFn fn = [](const std::vector<Tensor>& a) {
    Generator local(17);
    return dropout(a[0], 0.3, true, &local);
  };
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool nc : {false, true}) {
      EXPECT_TRUE(cpu_cuda_parity(fn, {input({33, 70}, 12)}, dt, true, nc))
          << dtype_name(dt) << " " << layout_name(nc);
    }
  }
}

// index_select, gather and scatter_add along every dim of a 3-D input, with repeated indices.
TEST(CudaIndex, IndexOpsParityOnEveryDim) {
  LN_REQUIRE_GPU();
  const Shape xs = {5, 6, 7};
  const Tensor x = input(xs, 13);
  for (int64_t dim = 0; dim < 3; ++dim) {
    const int64_t limit = xs[static_cast<size_t>(dim)];
    Shape is = {4, 5, 6};
    is[static_cast<size_t>(dim)] = 9;  // more entries than the dim has: repeats
    Shape ss = {5, 6, 7};
    ss[static_cast<size_t>(dim)] = 10;
    const Tensor sel = random_ids({11}, limit, 14 + static_cast<uint64_t>(dim));
    const Tensor idx = random_ids(is, limit, 20 + static_cast<uint64_t>(dim), DType::I32);
    const Tensor src = input(ss, 30 + static_cast<uint64_t>(dim));
    const TensorFn f_select = [dim](const std::vector<Tensor>& a) { return index_select(a[0], dim, a[1]); };
    const TensorFn f_gather = [dim](const std::vector<Tensor>& a) { return gather(a[0], dim, a[1]); };
    const TensorFn f_scatter = [dim](const std::vector<Tensor>& a) {
      return scatter_add(a[0], dim, a[1], a[2]);
    };
    for (DType dt : {DType::F32, DType::BF16}) {
      for (bool nc : {false, true}) {
        const std::string what =
            "dim " + std::to_string(dim) + " " + dtype_name(dt) + " " + layout_name(nc);
        EXPECT_TRUE(cpu_cuda_parity(f_select, {x, sel}, dt, true, nc)) << "index_select " << what;
        EXPECT_TRUE(cpu_cuda_parity(f_gather, {x, idx}, dt, true, nc)) << "gather " << what;
        EXPECT_TRUE(cpu_cuda_parity(f_scatter, {x, idx, src}, dt, true, nc)) << "scatter_add " << what;
      }
    }
  }
}

// Many values added into few targets (atomics contend), and a broadcast (expanded) input read by
// index_select; f32 agrees with the CPU up to summation order.
TEST(CudaIndex, ScatterAddManyContributionsAndBroadcastInput) {
  LN_REQUIRE_GPU();
  const Tensor idx = random_ids({256, 512}, 8, 40);
  const Tensor src = input({256, 512}, 41);
  const TensorFn f_scatter = [](const std::vector<Tensor>& a) { return scatter_add(a[0], 1, a[1], a[2]); };
  EXPECT_TRUE(cpu_cuda_parity(f_scatter, {input({256, 8}, 42), idx, src}, DType::F32,
                              testing::ParityTolerance{1e-4, 1e-4}, true, false));
  const TensorFn f_expand = [](const std::vector<Tensor>& a) {
    return index_select(a[0].expand({6, 9, 10}), 1, a[1]);
  };
  EXPECT_TRUE(cpu_cuda_parity(f_expand, {input({1, 9, 10}, 43), random_ids({20}, 9, 44)}, DType::F32));
  // The 1-D index itself strided.
  const TensorFn f_strided = [](const std::vector<Tensor>& a) {
    return index_select(a[0], 0, a[1].slice(0, 0, 16, 2));
  };
  EXPECT_TRUE(
      cpu_cuda_parity(f_strided, {input({7, 5}, 45), random_ids({16}, 7, 46)}, DType::BF16, true, true));
}

TEST(CudaIndex, IndexOutOfRangeThrowsOnGpu) {
  LN_REQUIRE_GPU();
  const Tensor x = zeros({3, 4}, DType::F32, kGpu);
  const std::string gr = testing::error_message([&] { gather(x, 1, full({2, 2}, 7, DType::I64, kGpu)); });
  EXPECT_NE(gr.find("[gather] index 7 out of range for dim 1 of size 4 (input (3, 4), index (2, 2))"),
            std::string::npos)
      << gr;
  const Tensor neg = from_vector<int32_t>({0, -1}, {2}).to(kGpu);
  const std::string sel = testing::error_message([&] { index_select(x, 0, neg); });
  EXPECT_NE(sel.find("[index_select] index -1 out of range for dim 0 of size 3"), std::string::npos) << sel;
  const std::string sc = testing::error_message([&] {
    scatter_add(x, 0, full({1, 1}, 3, DType::I64, kGpu), zeros({1, 1}, DType::F32, kGpu));
  });
  EXPECT_NE(sc.find("[scatter_add] index 3 out of range for dim 0 of size 3"), std::string::npos) << sc;
}

TEST(CudaIndex, CatStackSplitParity) {
  LN_REQUIRE_GPU();
  const TensorFn f_cat1 = [](const std::vector<Tensor>& a) { return cat({a[0], a[1], a[0]}, 1); };
  const TensorFn f_cat0 = [](const std::vector<Tensor>& a) { return cat({a[1], a[2]}, 0); };
  const TensorFn f_stack = [](const std::vector<Tensor>& a) { return stack({a[0], a[2]}, 1); };
  const TensorFn f_split = [](const std::vector<Tensor>& a) {
    const std::vector<Tensor> parts = split(a[0], 4, 1);  // widths 4, 4, 1
    return cat({parts[2], parts[0]}, 1);                  // parts[1] gets no gradient
  };
  const TensorFn f_chunk = [](const std::vector<Tensor>& a) {
    const std::vector<Tensor> parts = chunk(a[1], 3, 0);
    return stack({parts[0], parts[1]}, 0);
  };
  const std::vector<Tensor> in = {input({6, 9}, 50), input({6, 5}, 51), input({6, 9}, 52)};
  const std::vector<Tensor> in0 = {input({6, 9}, 53), input({4, 9}, 54), input({3, 9}, 55)};
  for (DType dt : {DType::F32, DType::BF16}) {
    for (bool nc : {false, true}) {
      const std::string what = std::string(dtype_name(dt)) + " " + layout_name(nc);
      EXPECT_TRUE(cpu_cuda_parity(f_cat1, in, dt, true, nc)) << "cat dim 1 " << what;
      EXPECT_TRUE(cpu_cuda_parity(f_cat0, in0, dt, true, nc)) << "cat dim 0 " << what;
      EXPECT_TRUE(cpu_cuda_parity(f_stack, in, dt, true, nc)) << "stack " << what;
      EXPECT_TRUE(cpu_cuda_parity(f_split, in, dt, true, nc)) << "split " << what;
      EXPECT_TRUE(cpu_cuda_parity(f_chunk, in, dt, true, nc)) << "chunk " << what;
    }
  }
}

}  // namespace
}  // namespace longnet
