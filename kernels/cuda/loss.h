// CUDA twins of kernels/cpu/loss.h: embedding lookup / scatter-add and
// cross-entropy from logits (f32, bf16 or f16 logits; f32 math).
//
// Read next: kernels/cuda/reduce.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace sg::cuda {

// table and out in `dtype` (f32, bf16, f16); dtable f32, accumulated.
void embedding_forward(void* out, const void* table, const int32_t* ids, int64_t N, int64_t C, DType dtype,
                       cudaStream_t stream);
// dtable (V, C) += the rows of dout by id, each id's rows added in position
// order (no atomics): the CPU twin's bits, every run.
void embedding_backward(float* dtable, const void* dout, const int32_t* ids, int64_t N, int64_t C, int64_t V,
                        DType dtype, cudaStream_t stream);

// logits (N, V) in `dtype` (f32, bf16, f16); losses and lse (N) f32.
void cross_entropy_forward(float* losses, float* lse, const void* logits, const int32_t* targets, int64_t N,
                           int64_t V, DType dtype, cudaStream_t stream);
// Writes dlogits (N, V) in `dtype`; it may be the logits' own buffer. With
// count null, dlosses holds one scale per row; otherwise the loss is the
// mean and every counted row's scale is dlosses[0] / count[0].
void cross_entropy_backward(void* dlogits, const float* dlosses, const float* count, const void* logits,
                            const float* lse, const int32_t* targets, int64_t N, int64_t V, DType dtype,
                            cudaStream_t stream);
// losses (N) f32, and logits (N, V) in `dtype` overwritten by g = softmax -
// onehot(target) (0 on rows whose target is negative): the forward and a
// backward with every dlosses 1, in one pass over the logits.
void cross_entropy_with_grad(float* losses, void* logits, const int32_t* targets, int64_t N, int64_t V,
                             DType dtype, cudaStream_t stream);
// loss = the mean of losses over rows with target >= 0; count = those rows.
void cross_entropy_mean(float* loss, float* count, const float* losses, const int32_t* targets, int64_t N,
                        cudaStream_t stream);

}  // namespace sg::cuda
