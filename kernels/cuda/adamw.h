// CUDA twin of kernels/cpu/adamw.h: one thread per element, running the same
// adamw_element as the CPU (kernels/adamw_math.h).
//
// Read next: kernels/cuda/rng.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/adamw_math.h"
#include "kernels/dtype.h"

namespace sg::cuda {

// copy (optional): the updated parameters rounded to copy_dtype, same pass.
void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& hp,
                  cudaStream_t stream, void* copy = nullptr, DType copy_dtype = DType::bf16);

}  // namespace sg::cuda
