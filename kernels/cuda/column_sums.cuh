// Internal to kernels/cuda: sums down the rows of a (rows, cols) matrix, per
// column, in two deterministic stages. A thread per column walking every row
// (the obvious kernel) gives GPT-2's 768 columns only 768 threads; here the
// rows are split into kColumnSumChunks chunks (sum_output.h), each (chunk,
// 32 V columns) block sums its part with 8 row phases and a fixed-order
// tree, writes a partial, and a second kernel adds the partials in chunk
// order: the same bits every run, thousands of threads busy. A thread reads
// V adjacent columns at once: 16 bytes where the rows allow (V = 8 in
// 16-bit), as a warp of 2-byte reads keeps too few bytes in flight.
#pragma once

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/cuda/sum_output.h"

namespace sg::cuda {

constexpr int kColumnTile = 32, kRowPhases = 8;

// Stage 1. value(row, col, v) fills v[k][j] with sum k's value at (row,
// col + j), j < V; partials[k][chunk * cols + col]. With V > 1, cols is a
// multiple of V (the callers pick V so), so a thread's V columns are all in
// or all out.
template <int K, int V, int Unroll = 4, typename Value>
__device__ void column_partial_sums(float* const (&partials)[K], int64_t rows, int64_t cols, Value value) {
  __shared__ float shared[K][kRowPhases][kColumnTile * V];
  const int64_t col = (int64_t(blockIdx.x) * kColumnTile + threadIdx.x) * V;
  const int64_t chunk_rows = (rows + kColumnSumChunks - 1) / kColumnSumChunks;
  const int64_t first = int64_t(blockIdx.y) * chunk_rows, last = min(rows, first + chunk_rows);
  float sums[K][V] = {};
  if (col < cols) {
    // Unroll rows' values are read before any is added: their loads are
    // in flight together (GPT-2's 768 columns give only 3 x 128 blocks, too
    // few bytes in flight for memory's latency a row at a time). The rows
    // are still added in order: the same bits. (A caller with blocks
    // enough to fill the GPU, and work of its own per value, passes 1.)
    for (int64_t row = first + threadIdx.y; row < last; row += kRowPhases * Unroll) {
      float v[Unroll][K][V] = {};  // rows past the chunk stay unread
#pragma unroll
      for (int u = 0; u < Unroll; ++u) {
        if (row + u * kRowPhases < last) value(row + u * kRowPhases, col, v[u]);
      }
#pragma unroll
      for (int u = 0; u < Unroll; ++u) {
        if (row + u * kRowPhases >= last) break;
#pragma unroll
        for (int k = 0; k < K; ++k) {
#pragma unroll
          for (int j = 0; j < V; ++j) sums[k][j] += v[u][k][j];
        }
      }
    }
  }
#pragma unroll
  for (int k = 0; k < K; ++k) {
#pragma unroll
    for (int j = 0; j < V; ++j) shared[k][threadIdx.y][threadIdx.x * V + j] = sums[k][j];
  }
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      for (int j = 0; j < V; ++j) {
        float total = 0.0f;
        for (int phase = 0; phase < kRowPhases; ++phase) total += shared[k][phase][threadIdx.x * V + j];
        partials[k][int64_t(blockIdx.y) * cols + col + j] = total;
      }
    }
  }
}

// Stage 2, for K sums at once: out[k][col] = the chunks' partials[k], added
// in chunk order, then written (or added to the buffer, the whole sum at
// once) in each output's own dtype: the caller needs no zero-filled f32
// buffer and no cast after, and one launch serves outputs of mixed dtypes.
template <int K>
struct ColumnSums {
  SumOutput out[K];
  const float* partials[K];
};

template <typename T>
__device__ void store_sum(void* data, int64_t col, float total, bool add) {
  T* at = static_cast<T*>(data) + col;
  *at = store<T>(add ? load(*at) + total : total);
}

// A block of (32 columns, 8 phases): phase p adds chunks p, p + 8, ... in
// order, then the phases are added in order (a thread per column walking
// all 128 chunks waited on one load after another).
template <int K>
__global__ void finish_column_sums(ColumnSums<K> sums, int64_t cols) {
  __shared__ float shared[K][kRowPhases][kColumnTile];
  const int64_t col = int64_t(blockIdx.x) * kColumnTile + threadIdx.x;
  for (int k = 0; k < K; ++k) {
    float part = 0.0f;
    if (col < cols) {
      for (int64_t chunk = threadIdx.y; chunk < kColumnSumChunks; chunk += kRowPhases) {
        part += sums.partials[k][chunk * cols + col];
      }
    }
    shared[k][threadIdx.y][threadIdx.x] = part;
  }
  __syncthreads();
  if (threadIdx.y != 0 || col >= cols) return;
  for (int k = 0; k < K; ++k) {
    float total = 0.0f;
    for (int phase = 0; phase < kRowPhases; ++phase) total += shared[k][phase][threadIdx.x];
    const SumOutput& out = sums.out[k];
    switch (out.dtype) {
      case DType::bf16: store_sum<__nv_bfloat16>(out.data, col, total, out.add); break;
      case DType::f16: store_sum<__half>(out.data, col, total, out.add); break;
      default: store_sum<float>(out.data, col, total, out.add); break;  // the host checked: f32
    }
  }
}

// Launches stage 2 for K outputs (each f32, bf16 or f16).
template <int K>
void finish_column_sums_into(const SumOutput (&outs)[K], const float* const (&partials)[K], int64_t cols,
                             cudaStream_t stream) {
  ColumnSums<K> sums;
  for (int k = 0; k < K; ++k) {
    SG_CHECK(outs[k].dtype == DType::f32 || outs[k].dtype == DType::bf16 || outs[k].dtype == DType::f16,
             "column sums into a ", dtype_name(outs[k].dtype), " buffer; expected f32, bf16 or f16");
    sums.out[k] = outs[k], sums.partials[k] = partials[k];
  }
  finish_column_sums<<<unsigned((cols + kColumnTile - 1) / kColumnTile), dim3(kColumnTile, kRowPhases), 0, stream>>>(
      sums, cols);
  SG_CHECK_LAUNCH();
}

// Stage 1's grid for V columns a thread, and its block.
inline dim3 column_sum_grid(int64_t cols, int V) {
  return dim3(unsigned((cols + kColumnTile * V - 1) / (kColumnTile * V)), unsigned(kColumnSumChunks));
}
inline dim3 column_sum_block() { return dim3(kColumnTile, kRowPhases); }

}  // namespace sg::cuda
