// Error checks for CUDA runtime and cuBLAS calls: on failure they throw
// sg::Error naming the call, the error and the source line. Used by the .cu
// files of kernels/cuda and by the CUDA-aware parts of dist/ (the NCCL backend).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/error.h"

#define CUDA_CHECK(call)                                                                          \
  do {                                                                                            \
    cudaError_t status_ = (call);                                                                 \
    if (status_ != cudaSuccess) {                                                                 \
      SG_FAIL(#call, " failed: ", cudaGetErrorString(status_), " (", __FILE__, ":", __LINE__, ")"); \
    }                                                                                             \
  } while (0)

#define CUBLAS_CHECK(call)                                                                            \
  do {                                                                                                \
    cublasStatus_t status_ = (call);                                                                  \
    if (status_ != CUBLAS_STATUS_SUCCESS) {                                                           \
      SG_FAIL(#call, " failed: ", cublasGetStatusString(status_), " (", __FILE__, ":", __LINE__, ")"); \
    }                                                                                                 \
  } while (0)

// After a kernel launch: reports a bad launch configuration at once (errors
// inside the kernel surface at the next synchronizing call).
#define SG_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace sg::cuda {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements: enough to fill the GPU,
// never more than the grid limit.
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  return unsigned(blocks < 1 ? 1 : (blocks > 65535 * 4 ? 65535 * 4 : blocks));
}

}  // namespace sg::cuda
