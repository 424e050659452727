// Internal to kernels/cuda: copies from global to shared memory that run
// while the thread goes on (PTX cp.async, sm_80 and later).
//
// A kernel that streams tiles through shared memory would otherwise wait
// for each tile's loads before it can compute on it. With two buffers it
// can ask for tile j + 1 and compute on tile j while the copy is in flight:
//
//   fetch tile 0 into buffer 0; commit
//   for each tile j:
//     wait until no group is pending (tile j's is the only one)
//     __syncthreads()   every thread's part of tile j has landed, and
//                       every thread is done computing on tile j - 1
//     fetch tile j + 1 into buffer (j + 1) % 2; commit  (if there is one)
//     compute on buffer j % 2
//
// One barrier a tile serves both purposes; tile j + 1 is in flight for
// all of tile j's compute.
//
// A wait covers only the calling thread's copies; the barrier after it makes
// them everyone's. The emulator (tools/cuda_emu/simt.h) performs a copy
// only at its wait, so reading a buffer too early shows there as stale data.
//
// Read next: kernels/cuda/flash_attention_tc.cu.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sg::cuda {

// dst[0, Bytes) = src[0, Bytes) when `valid`, else zeros (src is then not
// read, but must still be an address of the right alignment). Bytes is 4, 8
// or 16; both addresses aligned to it; dst in shared memory.
template <int Bytes>
__device__ __forceinline__ void async_copy(void* dst, const void* src, bool valid) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
#ifdef SG_CUDA_EMULATOR
  ::sg_emu::async_copy(dst, src, Bytes, valid ? Bytes : 0);
#else
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  const int src_bytes = valid ? Bytes : 0;
  if constexpr (Bytes == 16) {  // .cg: through L2 only (these tiles are read once per block)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(address), "l"(src), "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;" ::"r"(address), "l"(src), "n"(Bytes),
                 "r"(src_bytes));
  }
#endif
}

// Closes the group of copies this thread issued since the last commit.
__device__ __forceinline__ void async_commit() {
#ifdef SG_CUDA_EMULATOR
  ::sg_emu::async_commit();
#else
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most Pending of this thread's committed groups are in flight.
template <int Pending>
__device__ __forceinline__ void async_wait() {
#ifdef SG_CUDA_EMULATOR
  ::sg_emu::async_wait(Pending);
#else
  asm volatile("cp.async.wait_group %0;" ::"n"(Pending) : "memory");
#endif
}

}  // namespace sg::cuda
