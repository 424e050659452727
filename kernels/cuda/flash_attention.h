// CUDA twin of kernels/cpu/flash_attention.h: fused causal self-attention
// that never materializes the (T, T) matrix. The math (online softmax
// forward, recomputation from lse backward) is written out there.
//
// Kernels: each block takes one (batch, head) pair and a tile of rows, one
// thread per row; the other side's rows stream through shared memory tile
// by tile. Backward runs three kernels: D = rowsum(dO * O); dK and dV with a
// thread per key row (looping over the query tiles that can see it); dQ
// with a thread per query row. Every gradient element has one writer: no
// atomics, the same bits every run. Head sizes up to 128.
//
// These kernels compute on CUDA cores. bf16/f16 with head sizes 16, 32, 48
// or 64 go to tensor-core kernels instead (flash_attention_tc.cu, WMMA), the
// same math with the products as 16x16x16 tiles; SG_FLASH_TENSOR_CORES=0
// keeps everything here (docs/performance.md says what is measured).
//
// Read next: kernels/cuda/loss.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace sg::cuda {

constexpr int64_t kFlashMaxHeadSize = 128;

// out (B, T, C) and qkv (B, T, 3C) in `dtype` (f32, bf16, f16); lse (B, NH, T) f32.
void flash_attention_forward(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                             DType dtype, cudaStream_t stream);

// Writes dqkv (B, T, 3C), like dout, qkv and out in `dtype`: each element
// has one writer, which sums in f32 and rounds once (no zeroed f32 buffer,
// no cast after); row_dots: scratch of B * NH * T floats (the D_t above).
// dq_partials: scratch of flash_attention_backward_scratch floats, where
// that is not 0 (the tensor-core kernels' fused dQ, SG_FLASH_FUSED_DQ=1).
void flash_attention_backward(void* dqkv, float* row_dots, const void* dout, const void* qkv, const void* out,
                              const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype,
                              cudaStream_t stream, float* dq_partials = nullptr);
int64_t flash_attention_backward_scratch(int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype);

}  // namespace sg::cuda
