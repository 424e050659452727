// CUDA twins of kernels/cpu/normalization.h: LayerNorm and softmax over the
// last dimension of (N, C). LayerNorm takes f32, bf16 or f16 both ways
// (statistics and parameter gradients in f32); softmax's backward is f32.
// normalization.cu has the forwards and softmax, layernorm_backward.cu
// LayerNorm's backward kernels.
//
// Read next: kernels/cuda/attention.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/sum_output.h"
#include "kernels/dtype.h"

namespace sg::cuda {

void layernorm_forward(void* out, float* mean, float* rstd, const void* in, const void* weight, const void* bias,
                       int64_t N, int64_t C, DType dtype, cudaStream_t stream);
// sum = x + y (the residual stream) and out = layernorm(sum), in one pass.
void add_layernorm_forward(void* sum, void* out, float* mean, float* rstd, const void* x, const void* y,
                           const void* weight, const void* bias, int64_t N, int64_t C, DType dtype,
                           cudaStream_t stream);
// din written in `dtype` (as dout, in and weight), plus add_to_din (N, C in
// `dtype`) when given, in the same pass; dweight and dbias (C) summed in f32
// and written or added in their own dtypes (SumOutput); partials: scratch of
// 2 * kColumnSumChunks * C floats (sum_output.h).
void layernorm_backward(void* din, const SumOutput& dweight, const SumOutput& dbias, float* partials, const void* dout,
                        const void* in, const void* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                        DType dtype, cudaStream_t stream, const void* add_to_din = nullptr);
// How many backwards the pipelined kernel has run (SG_LAYERNORM_PIPELINED_BACKWARD=1,
// layernorm_backward.cu), for the tests.
int64_t layernorm_pipelined_backwards();

void softmax_forward(void* out, const void* in, int64_t N, int64_t C, DType dtype, cudaStream_t stream);
void softmax_backward(float* din, const float* out, const float* dout, int64_t N, int64_t C, cudaStream_t stream);

// As kernels/cpu/normalization.h's causal_softmax_*, in f32, bf16 or f16.
void causal_softmax_forward(void* out, const void* in, int64_t N, int64_t T, float scale, DType dtype,
                            cudaStream_t stream);
void causal_softmax_backward(void* din, const void* out, const void* dout, int64_t N, int64_t T, float scale,
                             DType dtype, cudaStream_t stream);

}  // namespace sg::cuda
