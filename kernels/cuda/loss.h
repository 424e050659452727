// CUDA twins of kernels/cpu/loss.h: embedding lookup / scatter-add and
// cross-entropy from logits. f32.
//
// Read next: kernels/cuda/reduce.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace sg::cuda {

void embedding_forward(float* out, const float* table, const int32_t* ids, int64_t N, int64_t C, cudaStream_t stream);
// Scatter-add with atomics: the summation order of repeated ids varies run to run.
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C,
                        cudaStream_t stream);

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                           int64_t V, cudaStream_t stream);
void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V, cudaStream_t stream);

}  // namespace sg::cuda
