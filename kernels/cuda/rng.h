// CUDA twin of kernels/cpu/rng.h: the same Philox code (kernels/philox.h)
// compiled for the GPU, so CPU and CUDA fills agree bit for bit.
//
// Read next: tensor/tensor.h (one layer up).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace sg::cuda {

void uniform_fill(float* out, int64_t n, int64_t first_index, uint64_t seed, uint64_t stream_id, float low, float high,
                  cudaStream_t stream);
void normal_fill(float* out, int64_t n, int64_t first_index, uint64_t seed, uint64_t stream_id, float mean, float std,
                 cudaStream_t stream);

}  // namespace sg::cuda
