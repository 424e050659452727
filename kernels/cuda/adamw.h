// CUDA twin of kernels/cpu/adamw.h: one thread per element, running the same
// adamw_element as the CPU (kernels/adamw_math.h).
//
// Read next: kernels/cuda/rng.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/adamw_math.h"

namespace sg::cuda {

void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& hp,
                  cudaStream_t stream);

}  // namespace sg::cuda
