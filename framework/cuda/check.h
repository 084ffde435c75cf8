#pragma once
// Checked calls into CUDA, cuBLAS(Lt), cuDNN and NCCL: a failure throws longnet::Error naming the
// statement, the place and the library's own error string.
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "framework/core/error.h"

namespace longnet::cuda::detail {

[[noreturn]] void fail(const char* library, const char* statement, const char* file, int line,
                       const std::string& what);
const char* cublas_status_name(cublasStatus_t s);

}  // namespace longnet::cuda::detail

/// Throws unless the CUDA runtime call returns cudaSuccess.
#define LN_CUDA_CHECK(stmt)                                                                   \
  do {                                                                                        \
    const cudaError_t ln_err_ = (stmt);                                                       \
    if (ln_err_ != cudaSuccess) {                                                             \
      cudaGetLastError(); /* reported here: must not resurface at the next launch check */    \
      ::longnet::cuda::detail::fail("CUDA", #stmt, __FILE__, __LINE__, cudaGetErrorString(ln_err_)); \
    }                                                                                         \
  } while (0)

/// Throws if the last kernel launch failed (launch configuration or an earlier sticky error).
#define LN_CUDA_CHECK_LAUNCH() LN_CUDA_CHECK(cudaGetLastError())

/// Throws unless the cuBLAS / cuBLASLt call returns CUBLAS_STATUS_SUCCESS.
#define LN_CUBLAS_CHECK(stmt)                                                                 \
  do {                                                                                        \
    const cublasStatus_t ln_st_ = (stmt);                                                     \
    if (ln_st_ != CUBLAS_STATUS_SUCCESS)                                                      \
      ::longnet::cuda::detail::fail("cuBLAS", #stmt, __FILE__, __LINE__,                      \
                                    ::longnet::cuda::detail::cublas_status_name(ln_st_));     \
  } while (0)

/// Throws unless the cuDNN call returns CUDNN_STATUS_SUCCESS.
#define LN_CUDNN_CHECK(stmt)                                                                  \
  do {                                                                                        \
    const cudnnStatus_t ln_st_ = (stmt);                                                      \
    if (ln_st_ != CUDNN_STATUS_SUCCESS)                                                       \
      ::longnet::cuda::detail::fail("cuDNN", #stmt, __FILE__, __LINE__, cudnnGetErrorString(ln_st_)); \
  } while (0)
