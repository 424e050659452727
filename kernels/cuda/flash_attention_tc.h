// Internal to kernels/cuda: fused causal attention on tensor cores (PTX
// mma.sync, kernels/cuda/mma.cuh), which flash_attention.cu hands bf16/f16
// problems with head sizes 16, 32, 48 or 64 (GPT-2's is 64) whose buffers
// are 16-byte aligned. The CUDA-core kernels there take the rest (f32, other
// head sizes), and everything when SG_FLASH_TENSOR_CORES=0.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"

namespace sg::cuda {

constexpr int64_t kFlashTensorCoreMaxHeadSize = 64;

// The kernels also move 16-byte vectors: the caller checks that every buffer
// starts on a 16-byte boundary (all_aligned16, float_types.cuh).
bool flash_tensor_cores_apply(DType dtype, int64_t head_size);

// Same arguments and results as flash_attention_forward / _backward
// (flash_attention.h); the backward also writes row_dots (D = rowsum(dO *
// O), B * NH * T floats) itself, so it needs every buffer 16-byte aligned,
// out included.
void flash_forward_tensor_cores(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                                DType dtype, cudaStream_t stream);
// The forward on Hopper's warpgroup MMA (flash_attention_wgmma.cu), when it
// applies: SG_FLASH_WGMMA=1, head size 64, bf16 or f16, a compute
// capability 9.0 device. Returns whether it ran (flash_forward_tensor_cores
// asks it first). Not yet timed on a GPU, so off unless opted into.
bool flash_forward_wgmma(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                         DType dtype, cudaStream_t stream);
int64_t flash_wgmma_forwards();  // its launches so far, for the tests
// The backward there (dQ, then dK and dV), under the same conditions;
// flash_backward_tensor_cores asks it first too.
bool flash_backward_wgmma(void* dqkv, float* row_dots, const void* dout, const void* qkv, const void* out,
                          const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype,
                          cudaStream_t stream);
int64_t flash_wgmma_backwards();
// With dq_partials (flash_dq_partial_floats floats, 16-byte aligned), dQ is
// made inside the dK/dV kernel, as partials it then sums
// (SG_FLASH_FUSED_DQ=1), instead of by a kernel of its own.
void flash_backward_tensor_cores(void* dqkv, float* row_dots, const void* dout, const void* qkv, const void* out,
                                 const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype,
                                 cudaStream_t stream, float* dq_partials = nullptr);
// The scratch floats the fused dQ needs for this problem: 0 where it would
// not run (SG_FLASH_FUSED_DQ unset, or the tensor-core kernels do not
// apply), so the caller passes no scratch. Read at each call.
int64_t flash_dq_partial_floats(int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype);

}  // namespace sg::cuda
