// CUDA twins of kernels/cpu/reduce.h. The result is written to *out in device
// memory, so a reduction never forces a host round trip by itself. partials
// is scratch for kReducePartials doubles (device memory, the caller's): the
// per-block results of the first of two stages (reduce.cu).
//
// Read next: kernels/cuda/adamw.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace sg::cuda {

constexpr int kReducePartials = 1024;

void sum_forward(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream);
void max_forward(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream);
void squared_norm_forward(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream);

}  // namespace sg::cuda
