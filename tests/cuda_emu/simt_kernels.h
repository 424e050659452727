// Small CUDA kernels that exercise the SIMT emulator (tools/cuda_emu): each
// host function launches one and returns once it has run.
#pragma once

#include <cstdint>

namespace sg::emu_test {

void block_sums(float* out, const float* in, int blocks, int threads);  // out[b] = sum of block b's slice
void warp_sums(float* out, int lanes_alive);  // out[lane] = sum over the warp of lane ids, via shuffles
void thread_ids(int32_t* out, unsigned grid_x, unsigned grid_y, unsigned block_x, unsigned block_y);
void split_barrier(int32_t* out);              // half the block at __syncthreads, half at __syncwarp
void reverse_in_shared(float* out, const float* in, int n);  // extern __shared__, n floats
void write_past_end(float* out, int n);        // out[n] = 1: one element too far
void read_past_shared(float* out, int n);     // n floats of extern __shared__, reads element n
void launch_too_many_threads(float* out);      // a block of 2048 threads
void shift_without_barrier(float* out, int n);
void too_much_shared_memory(float* out);       // two 32 KiB __shared__ arrays in one block
void write_past_static_shared(float* out);     // a __shared__ float[15] written by 16 threads  // out[i] = i - 1 through shared memory, a barrier missing

}  // namespace sg::emu_test
