// Internal to kernels/cuda: sums down the rows of a (rows, cols) matrix, per
// column, in two deterministic stages. A thread per column walking every row
// (the obvious kernel) gives GPT-2's 768 columns only 768 threads; here the
// rows are split into kColumnSumChunks chunks, each (chunk, 32 columns) block
// sums its part with 8 row phases and a fixed-order tree, writes a partial,
// and a second kernel adds the partials in chunk order: the same bits every
// run, thousands of threads busy.
#pragma once

#include <cstdint>

#include "kernels/cuda/float_types.cuh"

namespace sg::cuda {

constexpr int kColumnSumChunks = 32;
constexpr int kColumnTile = 32, kRowPhases = 8;

// Stage 1. value(row, col) -> float; partials[chunk * cols + col].
template <int K, typename Value>
__device__ void column_partial_sums(float* const (&partials)[K], int64_t rows, int64_t cols, Value value) {
  __shared__ float shared[K][kRowPhases][kColumnTile];
  const int64_t col = int64_t(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t chunk_rows = (rows + kColumnSumChunks - 1) / kColumnSumChunks;
  const int64_t first = int64_t(blockIdx.y) * chunk_rows, last = min(rows, first + chunk_rows);
  float sums[K] = {};
  if (col < cols) {
    for (int64_t row = first + threadIdx.y; row < last; row += kRowPhases) {
      float v[K];
      value(row, col, v);
#pragma unroll
      for (int k = 0; k < K; ++k) sums[k] += v[k];
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k) shared[k][threadIdx.y][threadIdx.x] = sums[k];
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      float total = 0.0f;
      for (int phase = 0; phase < kRowPhases; ++phase) total += shared[k][phase][threadIdx.x];
      partials[k][int64_t(blockIdx.y) * cols + col] = total;
    }
  }
}

// Stage 2, for K sums at once: out[k][col] = the chunks' partials[k], added
// in chunk order and written (not added to) in the output's type, so the
// caller needs no zero-filled f32 buffer and no cast after: one launch.
template <int K, typename OutT>
struct ColumnSums {
  OutT* out[K];
  const float* partials[K];
};

template <int K, typename OutT>
__global__ void finish_column_sums(ColumnSums<K, OutT> sums, int64_t cols) {
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  for (int k = 0; k < K; ++k) {
    float total = 0.0f;
    for (int chunk = 0; chunk < kColumnSumChunks; ++chunk) total += sums.partials[k][chunk * cols + col];
    sums.out[k][col] = store<OutT>(total);
  }
}

inline dim3 column_sum_grid(int64_t cols) {
  return dim3(unsigned((cols + kColumnTile - 1) / kColumnTile), kColumnSumChunks);
}
inline dim3 column_sum_block() { return dim3(kColumnTile, kRowPhases); }

}  // namespace sg::cuda
