// CUDA twin of kernels/cpu/attention.h: naive causal self-attention that
// materializes att (B, NH, T, T). f32 only. It is the reference the fused
// (flash/cuDNN) attention of the GPU issue will be checked against.
//
// Read next: kernels/cuda/loss.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace sg::cuda {

void attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                       cudaStream_t stream);
// Accumulates into dqkv. Uses T floats of shared memory per warp (T <= 3072).
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int64_t B, int64_t T,
                        int64_t C, int64_t NH, cudaStream_t stream);

}  // namespace sg::cuda
