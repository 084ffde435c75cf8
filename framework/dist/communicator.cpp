#include "framework/dist/communicator.h"

#include <algorithm>
#include <type_traits>

#include "framework/core/error.h"

namespace longnet::dist {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

namespace {
class DoneWork final : public Work {
 public:
  void wait() override {}
};
}  // namespace

std::shared_ptr<Work> completed_work() { return std::make_shared<DoneWork>(); }

namespace detail {

namespace {
// 16-bit floats reduce in f32 and round once.
template <class T>
using float_or = std::conditional_t<std::is_same_v<T, BFloat16> || std::is_same_v<T, Half>, float, T>;
}  // namespace

void check_tensor(const char* op, const Tensor& t, const char* what) {
  LN_CHECK(t.defined(), "[", op, "] ", what, " is undefined");
  LN_CHECK(t.is_contiguous(), "[", op, "] ", what, " of shape ", shape_str(t.shape()), " must be contiguous");
}

void check_scattered(const char* op, const Communicator& comm, const Tensor& big, const Tensor& small) {
  check_tensor(op, big, "the group-sized tensor");
  check_tensor(op, small, "the per-rank tensor");
  LN_CHECK(big.dtype() == small.dtype(), "[", op, "] dtypes differ: ", dtype_name(big.dtype()), " and ",
           dtype_name(small.dtype()));
  LN_CHECK(big.numel() == small.numel() * comm.size(), "[", op, "] a group of ", comm.size(),
           " needs the group-sized tensor to hold ", comm.size(), " x the per-rank one: ", shape_str(big.shape()),
           " vs ", shape_str(small.shape()));
}

void check_peer(const char* op, const Communicator& comm, int peer) {
  LN_CHECK(peer >= 0 && peer < comm.size(), "[", op, "] peer rank ", peer, " outside a group of ", comm.size());
}

void reduce_into(void* dst, const void* src, int64_t n, DType dtype, ReduceOp op) {
  dispatch_all(dtype, "reduce", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, uint8_t>) {
      LN_FAIL("[reduce] cannot reduce ", dtype_name(dtype), " tensors");
    } else {
      T* d = static_cast<T*>(dst);
      const T* s = static_cast<const T*>(src);
      for (int64_t i = 0; i < n; ++i) {
        const float_or<T> a = static_cast<float_or<T>>(d[i]), b = static_cast<float_or<T>>(s[i]);
        float_or<T> r;
        switch (op) {
          case ReduceOp::Sum:
          case ReduceOp::Avg: r = a + b; break;
          case ReduceOp::Max: r = std::max(a, b); break;
          case ReduceOp::Min: r = std::min(a, b); break;
        }
        d[i] = convert<T>(r);
      }
    }
  });
}

void divide_in_place(void* dst, int64_t n, DType dtype, int64_t divisor) {
  dispatch_all(dtype, "reduce", [&]<class T>() {
    if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, uint8_t>) {
      LN_FAIL("[reduce] cannot average ", dtype_name(dtype), " tensors");
    } else {
      T* d = static_cast<T*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = convert<T>(static_cast<float_or<T>>(d[i]) / divisor);
    }
  });
}

}  // namespace detail
}  // namespace longnet::dist
