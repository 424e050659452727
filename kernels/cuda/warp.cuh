// Internal to kernels/cuda: warp-wide reductions with shuffles. After the
// call every lane holds the result.
#pragma once

namespace sg::cuda {

constexpr int kWarp = 32;

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__device__ __forceinline__ float warp_max(float value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

// The row of a kernel that gives each warp one row: the warp's index in the grid.
__device__ __forceinline__ int64_t warp_row() { return (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp; }

// Blocks for one warp per row with kThreads threads per block.
inline unsigned blocks_for_rows(int64_t rows, int threads) {
  int64_t warps_per_block = threads / kWarp;
  return unsigned((rows + warps_per_block - 1) / warps_per_block);
}

}  // namespace sg::cuda
