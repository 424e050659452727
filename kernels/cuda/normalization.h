// CUDA twins of kernels/cpu/normalization.h: LayerNorm and softmax over the
// last dimension of (N, C). Forward kernels take f32, bf16 or f16 (statistics
// in f32); backward kernels are f32.
//
// Read next: kernels/cuda/attention.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace sg::cuda {

void layernorm_forward(void* out, float* mean, float* rstd, const void* in, const void* weight, const void* bias,
                       int64_t N, int64_t C, DType dtype, cudaStream_t stream);
void layernorm_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                        cudaStream_t stream);

void softmax_forward(void* out, const void* in, int64_t N, int64_t C, DType dtype, cudaStream_t stream);
void softmax_backward(float* din, const float* out, const float* dout, int64_t N, int64_t C, cudaStream_t stream);

}  // namespace sg::cuda
