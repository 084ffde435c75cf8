#pragma once
// A small builder over cuDNN's backend (graph) API: tensors, pointwise / matmul / reduction /
// reshape operations, an operation graph, and an execution plan from the heuristics. Fused
// engines (the flash attention ones) are found by cuDNN matching the shape of the graph, so the
// graphs are spelled as sequences of these primitive operations.
#include <cudnn.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace longnet::cuda::dnn {

/// One backend descriptor, destroyed with the object.
class Descriptor {
 public:
  explicit Descriptor(cudnnBackendDescriptorType_t type);
  ~Descriptor();
  Descriptor(const Descriptor&) = delete;
  Descriptor& operator=(const Descriptor&) = delete;

  cudnnBackendDescriptor_t get() const { return desc_; }
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values);
  void set_int(cudnnBackendAttributeName_t name, int64_t value);
  void set_ints(cudnnBackendAttributeName_t name, const std::vector<int64_t>& values);
  void set_data_type(cudnnBackendAttributeName_t name, cudnnDataType_t value);
  void set_bool(cudnnBackendAttributeName_t name, bool value);
  void set_desc(cudnnBackendAttributeName_t name, const Descriptor& value);
  void finalize();

 private:
  cudnnBackendDescriptor_t desc_ = nullptr;
};

/// A tensor of a graph: its unique id (what the variant pack binds data to).
using TensorId = int64_t;

/// Builds an operation graph, then plans it. Tensor ids are assigned in creation order.
class GraphBuilder {
 public:
  /// A tensor in device memory (bound at execution) of `type` with 4-D dims and strides.
  TensorId tensor(cudnnDataType_t type, std::vector<int64_t> dims, std::vector<int64_t> strides);
  /// An intermediate the engine keeps to itself.
  TensorId virtual_tensor(cudnnDataType_t type, std::vector<int64_t> dims, std::vector<int64_t> strides);
  /// A scalar passed by value at execution (a host pointer in the variant pack).
  TensorId scalar(cudnnDataType_t type);

  /// y = mode(x) or mode(x, b), or for BINARY_SELECT y = t ? x : b; `axis` for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t compute, TensorId x, TensorId b, TensorId t, TensorId y,
                 int64_t axis = -1);
  /// c = a @ b over the last two dims, batched over the first two (f32 accumulation).
  void matmul(TensorId a, TensorId b, TensorId c);
  /// y = reduce(x) over the dims where y has size 1.
  void reduction(cudnnReduceTensorOp_t op, TensorId x, TensorId y);
  /// y is x seen with other dims / strides (a transpose).
  void reshape(TensorId x, TensorId y);

  /// Dims and strides a tensor was created with.
  const std::vector<int64_t>& dims(TensorId id) const;
  const std::vector<int64_t>& strides(TensorId id) const;

  /// Finalizes the graph and the first heuristic engine that supports it; empty when none does.
  /// `why` receives cuDNN's reason when no engine is found.
  struct Plan;
  std::unique_ptr<Plan> build(cudnnHandle_t handle, std::string* why);

 private:
  struct Entry {
    std::unique_ptr<Descriptor> desc;
    std::vector<int64_t> dims, strides;
  };
  TensorId add_tensor(cudnnDataType_t type, std::vector<int64_t> dims, std::vector<int64_t> strides, bool is_virtual,
                      bool by_value);
  const Descriptor& desc(TensorId id) const;

  std::vector<Entry> tensors_;
  std::vector<std::unique_ptr<Descriptor>> ops_;
  std::vector<std::unique_ptr<Descriptor>> op_params_;  // pointwise/matmul/reduction descriptors
};

/// A finalized execution plan and its workspace size.
struct GraphBuilder::Plan {
  std::unique_ptr<Descriptor> graph;
  std::unique_ptr<Descriptor> engine_config;
  std::unique_ptr<Descriptor> plan;
  int64_t workspace_bytes = 0;

  /// Runs the plan on the handle's stream with the given (tensor id, pointer) bindings; id 0
  /// stands for a tensor the graph does not have and is skipped.
  void execute(cudnnHandle_t handle, const std::vector<std::pair<TensorId, void*>>& bindings, void* workspace) const;
};

/// The cuDNN library version of the loaded library (e.g. 91400 for 9.14.0).
int64_t runtime_version();

}  // namespace longnet::cuda::dnn
