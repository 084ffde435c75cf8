#include "framework/cuda/cudnn_graph.h"

#include "framework/cuda/check.h"

// The graph and plan still take the handle as an attribute in the cuDNN 9 releases we support
// (9.14 has no replacement); newer headers mark those attributes deprecated.
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

namespace longnet::cuda::dnn {

Descriptor::Descriptor(cudnnBackendDescriptorType_t type) { LN_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &desc_)); }

Descriptor::~Descriptor() {
  if (desc_) cudnnBackendDestroyDescriptor(desc_);
}

void Descriptor::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
                     const void* values) {
  LN_CUDNN_CHECK(cudnnBackendSetAttribute(desc_, name, type, count, values));
}

void Descriptor::set_int(cudnnBackendAttributeName_t name, int64_t value) { set(name, CUDNN_TYPE_INT64, 1, &value); }

void Descriptor::set_ints(cudnnBackendAttributeName_t name, const std::vector<int64_t>& values) {
  set(name, CUDNN_TYPE_INT64, static_cast<int64_t>(values.size()), values.data());
}

void Descriptor::set_data_type(cudnnBackendAttributeName_t name, cudnnDataType_t value) {
  set(name, CUDNN_TYPE_DATA_TYPE, 1, &value);
}

void Descriptor::set_bool(cudnnBackendAttributeName_t name, bool value) { set(name, CUDNN_TYPE_BOOLEAN, 1, &value); }

void Descriptor::set_desc(cudnnBackendAttributeName_t name, const Descriptor& value) {
  cudnnBackendDescriptor_t d = value.get();
  set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &d);
}

void Descriptor::finalize() { LN_CUDNN_CHECK(cudnnBackendFinalize(desc_)); }

TensorId GraphBuilder::add_tensor(cudnnDataType_t type, std::vector<int64_t> dims, std::vector<int64_t> strides,
                                  bool is_virtual, bool by_value) {
  const TensorId id = static_cast<TensorId>(tensors_.size()) + 1;
  auto d = std::make_unique<Descriptor>(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  d->set_data_type(CUDNN_ATTR_TENSOR_DATA_TYPE, type);
  d->set_ints(CUDNN_ATTR_TENSOR_DIMENSIONS, dims);
  d->set_ints(CUDNN_ATTR_TENSOR_STRIDES, strides);
  d->set_int(CUDNN_ATTR_TENSOR_UNIQUE_ID, id);
  d->set_int(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, 16);
  d->set_bool(CUDNN_ATTR_TENSOR_IS_VIRTUAL, is_virtual);
  if (by_value) d->set_bool(CUDNN_ATTR_TENSOR_IS_BY_VALUE, true);
  d->finalize();
  tensors_.push_back({std::move(d), std::move(dims), std::move(strides)});
  return id;
}

TensorId GraphBuilder::tensor(cudnnDataType_t type, std::vector<int64_t> dims, std::vector<int64_t> strides) {
  return add_tensor(type, std::move(dims), std::move(strides), false, false);
}

TensorId GraphBuilder::virtual_tensor(cudnnDataType_t type, std::vector<int64_t> dims, std::vector<int64_t> strides) {
  return add_tensor(type, std::move(dims), std::move(strides), true, false);
}

TensorId GraphBuilder::scalar(cudnnDataType_t type) { return add_tensor(type, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true); }

const Descriptor& GraphBuilder::desc(TensorId id) const { return *tensors_.at(static_cast<size_t>(id - 1)).desc; }
const std::vector<int64_t>& GraphBuilder::dims(TensorId id) const { return tensors_.at(static_cast<size_t>(id - 1)).dims; }
const std::vector<int64_t>& GraphBuilder::strides(TensorId id) const {
  return tensors_.at(static_cast<size_t>(id - 1)).strides;
}

void GraphBuilder::pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t compute, TensorId x, TensorId b, TensorId t,
                             TensorId y, int64_t axis) {
  auto pw = std::make_unique<Descriptor>(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  pw->set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
  pw->set_data_type(CUDNN_ATTR_POINTWISE_MATH_PREC, compute);
  if (axis >= 0) pw->set_int(CUDNN_ATTR_POINTWISE_AXIS, axis);
  pw->finalize();
  auto op = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, *pw);
  op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, desc(x));
  if (b) op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, desc(b));
  if (t) op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, desc(t));
  op->set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, desc(y));
  op->finalize();
  op_params_.push_back(std::move(pw));
  ops_.push_back(std::move(op));
}

void GraphBuilder::matmul(TensorId a, TensorId b, TensorId c) {
  auto mm = std::make_unique<Descriptor>(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
  mm->set_data_type(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_DATA_FLOAT);
  mm->finalize();
  auto op = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
  op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, desc(a));
  op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, desc(b));
  op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, desc(c));
  op->set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, *mm);
  op->finalize();
  op_params_.push_back(std::move(mm));
  ops_.push_back(std::move(op));
}

void GraphBuilder::reduction(cudnnReduceTensorOp_t reduce, TensorId x, TensorId y) {
  auto rd = std::make_unique<Descriptor>(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
  rd->set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce);
  rd->set_data_type(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_DATA_FLOAT);
  rd->finalize();
  auto op = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
  op->set_desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, desc(x));
  op->set_desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, desc(y));
  op->set_desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC, *rd);
  op->finalize();
  op_params_.push_back(std::move(rd));
  ops_.push_back(std::move(op));
}

void GraphBuilder::reshape(TensorId x, TensorId y) {
  auto op = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
  op->set_desc(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, desc(x));
  op->set_desc(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, desc(y));
  op->finalize();
  ops_.push_back(std::move(op));
}

std::unique_ptr<GraphBuilder::Plan> GraphBuilder::build(cudnnHandle_t handle, std::string* why) {
  auto plan = std::make_unique<Plan>();
  plan->graph = std::make_unique<Descriptor>(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  std::vector<cudnnBackendDescriptor_t> ops;
  for (const auto& op : ops_) ops.push_back(op->get());
  plan->graph->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops.size()),
                   ops.data());
  plan->graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
  if (const cudnnStatus_t st = cudnnBackendFinalize(plan->graph->get()); st != CUDNN_STATUS_SUCCESS) {
    if (why) *why = std::string("operation graph: ") + cudnnGetErrorString(st);
    return nullptr;
  }

  Descriptor heuristics(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  heuristics.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, *plan->graph);
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  heuristics.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
  heuristics.finalize();
  int64_t count = 0;
  LN_CUDNN_CHECK(cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                          CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
  std::vector<std::unique_ptr<Descriptor>> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    configs.push_back(std::make_unique<Descriptor>(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    raw.push_back(configs.back()->get());
  }
  if (count > 0) {
    LN_CUDNN_CHECK(cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                            CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &count, raw.data()));
  }
  std::string last = count == 0 ? "no engine proposed" : "";
  for (int64_t i = 0; i < count; ++i) {
    auto candidate = std::make_unique<Descriptor>(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    candidate->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    candidate->set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, *configs[static_cast<size_t>(i)]);
    const cudnnStatus_t st = cudnnBackendFinalize(candidate->get());
    if (st != CUDNN_STATUS_SUCCESS) {
      last = cudnnGetErrorString(st);
      continue;
    }
    int64_t ws = 0, n = 0;
    LN_CUDNN_CHECK(cudnnBackendGetAttribute(candidate->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                            CUDNN_TYPE_INT64, 1, &n, &ws));
    plan->engine_config = std::move(configs[static_cast<size_t>(i)]);
    plan->plan = std::move(candidate);
    plan->workspace_bytes = ws;
    return plan;
  }
  if (why) *why = "no engine supports the graph (" + last + ")";
  return nullptr;
}

void GraphBuilder::Plan::execute(cudnnHandle_t handle, const std::vector<std::pair<TensorId, void*>>& bindings,
                                 void* workspace) const {
  std::vector<int64_t> ids;
  std::vector<void*> ptrs;
  for (const auto& [id, ptr] : bindings) {
    if (id == 0) continue;  // a role the graph does not have
    ids.push_back(id);
    ptrs.push_back(ptr);
  }
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(ids.size()), ids.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(ptrs.size()), ptrs.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
  pack.finalize();
  LN_CUDNN_CHECK(cudnnBackendExecute(handle, plan->get(), pack.get()));
}

int64_t runtime_version() { return static_cast<int64_t>(cudnnGetVersion()); }

}  // namespace longnet::cuda::dnn
