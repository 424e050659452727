// Small CUDA kernels that exercise the SIMT emulator (tools/cuda_emu): each
// host function launches one and returns once it has run.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace sg::emu_test {

void block_sums(float* out, const float* in, int blocks, int threads);  // out[b] = sum of block b's slice
void warp_sums(float* out, int lanes_alive);  // out[lane] = sum over the warp of lane ids, via shuffles
void thread_ids(int32_t* out, unsigned grid_x, unsigned grid_y, unsigned block_x, unsigned block_y);
void split_barrier(int32_t* out);              // half the block at __syncthreads, half at __syncwarp
void reverse_in_shared(float* out, const float* in, int n);  // extern __shared__, n floats
// The same in a kernel of its own, and cudaFuncSetAttribute's
// MaxDynamicSharedMemorySize for it.
void reverse_in_large_shared(float* out, const float* in, int n);
cudaError_t allow_large_reverse(int bytes);
void write_at(float* out, int index);          // out[index] = 1 (index n or -1: one element outside)
void read_shared_at(float* out, int n, int index);  // n floats of extern __shared__, reads element index
void launch_too_many_threads(float* out);      // a block of 2048 threads
// out[i] = i * Scale for i < n, through a launch whose template arguments
// nest; the file around it has <<< in a comment and in a string, which the
// translator must leave alone. Returns that string.
const char* nested_template_launch(int32_t* out, int n);
void shift_without_barrier(float* out, int n);  // out[i] = i - 1 through shared memory, a barrier missing
void too_much_shared_memory(float* out);       // two 32 KiB __shared__ arrays in one block
void write_static_shared_at(float* out, int index);  // a __shared__ float[16]: thread 0 writes element index
// One thread cp.asyncs in[0..3] into shared memory and reads it before and after waiting (simt_kernels.cu).
void async_copy_before_and_after_wait(float* out, const float* in);
// c (16x16, f32, row-major) = a (16x16 bf16, row-major) b (16x16 bf16, column-major) on tensor cores;
// without the __syncwarp between storing the result to shared memory and reading it when `synced` is false.
void wmma_product(float* c, const __nv_bfloat16* a, const __nv_bfloat16* b, bool synced);
// `threads` threads (a warpgroup is 128) issue two wgmma into one accumulator, A and B all ones, the
// second adding: out[2 t] is thread t's first accumulator before the wait, out[2 t + 1] after it
// (written only if the kernel waits).
void wgmma_twice(float* out, int threads, bool wait);
// A warpgroup makes acc = A B once, A (from registers) and B (N-major in shared memory, copied in
// from all_ones: 1024 bf16 ones) all ones, and before its wait, when `hazard` says so, writes B's
// shared memory (1), an A register (2) or an accumulator (3), or (4) thread 5 writes B's shared memory
// just before the wgmma, with no barrier between; or B's copies are not fenced for wgmma (5), or
// fenced before they land (6): each a bug on the GPU. out[t] is thread t's acc[0] after the wait.
void wgmma_with_hazard(float* out, const __nv_bfloat16* all_ones, int hazard);
// out[i] = factor * in[i] for i < n (at most 32), queued on `stream`: it may
// run after this function has returned (SG_EMU_STREAMS=lazy).
void scaled_copy(float* out, const float* in, float factor, int n, cudaStream_t stream);

}  // namespace sg::emu_test
