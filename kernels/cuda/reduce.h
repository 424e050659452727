// CUDA twins of kernels/cpu/reduce.h. The result is written to *out in device
// memory, so a reduction never forces a host round trip by itself.
//
// Read next: kernels/cuda/adamw.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace sg::cuda {

void sum_forward(float* out, const float* in, int64_t n, cudaStream_t stream);
void max_forward(float* out, const float* in, int64_t n, cudaStream_t stream);
void squared_norm_forward(float* out, const float* in, int64_t n, cudaStream_t stream);

}  // namespace sg::cuda
