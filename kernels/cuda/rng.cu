#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/rng.h"
#include "kernels/philox.h"

namespace sg::cuda {
namespace {

__global__ void uniform_kernel(float* out, int64_t n, int64_t first, uint64_t seed, uint64_t stream_id, float low,
                               float high) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    PhiloxBlock block = philox_for_element(seed, stream_id, uint64_t(first + i));
    out[i] = affine_exact(uniform_from_bits(block.x[0]), high - low, low);
  }
}

__global__ void normal_kernel(float* out, int64_t n, int64_t first, uint64_t seed, uint64_t stream_id, float mean,
                              float std) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    PhiloxBlock block = philox_for_element(seed, stream_id, uint64_t(first + i));
    out[i] = affine_exact(normal_from_block(block), std, mean);
  }
}

}  // namespace

void uniform_fill(float* out, int64_t n, int64_t first_index, uint64_t seed, uint64_t stream_id, float low, float high,
                  cudaStream_t stream) {
  if (n == 0) return;
  uniform_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, n, first_index, seed, stream_id, low, high);
  SG_CHECK_LAUNCH();
}

void normal_fill(float* out, int64_t n, int64_t first_index, uint64_t seed, uint64_t stream_id, float mean, float std,
                 cudaStream_t stream) {
  if (n == 0) return;
  normal_kernel<<<blocks_for(n), kThreads, 0, stream>>>(out, n, first_index, seed, stream_id, mean, std);
  SG_CHECK_LAUNCH();
}

}  // namespace sg::cuda
