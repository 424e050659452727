// What a CUDA kernel sees when it runs in the emulator (tools/cuda_emu/simt.h).
// Force-included (-include) into each kernels/cuda/*.cu after translate.cpp
// has rewritten its launches; the .cu files themselves are unchanged.
//
// g++ reads the CUDA headers in host mode, where __global__, __device__ and
// __shared__ expand to nothing. translate.cpp rewrites every __shared__
// array (simt.h's SharedArray); should one reach the compiler untranslated,
// `static` keeps the meaning: one block runs at a time, so one array per
// declaration is the block's shared memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/error.h"
#include "tools/cuda_emu/simt.h"
#include "tools/cuda_emu/mma.h"
#include "tools/cuda_emu/wmma.h"
#include "tools/cuda_emu/wgmma.h"

#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

#define threadIdx (::sg_emu::index().thread)
#define blockIdx (::sg_emu::index().block)
#define blockDim (::sg_emu::index().block_dim)
#define gridDim (::sg_emu::index().grid_dim)

inline void __syncthreads() { ::sg_emu::sync_block(); }
inline void __syncwarp(unsigned lane_mask = 0xffffffffu) { ::sg_emu::sync_warp(lane_mask); }

template <typename T>
T __shfl_sync(unsigned lane_mask, T value, int source_lane, int width = 32) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  const int lane = ::sg_emu::lane_id();
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = ::sg_emu::shuffle(lane_mask, bits, (lane / width) * width + source_lane % width);
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

template <typename T>
T __shfl_xor_sync(unsigned lane_mask, T value, int lane_xor, int width = 32) {
  const int lane = ::sg_emu::lane_id();
  const int source = lane ^ lane_xor;
  return __shfl_sync(lane_mask, value, (source / width == lane / width) ? source % width : lane % width, width);
}

// Bit i set where lane i's predicate holds. shardgrad's kernels ballot with
// the whole warp, which is all this supports (a partial mask is refused).
inline unsigned __ballot_sync(unsigned lane_mask, bool predicate) {
  SG_CHECK(lane_mask == 0xffffffffu, "CUDA emulator: __ballot_sync supports only the full warp's mask");
  const void* const* lanes = ::sg_emu::gather_from_warp(&predicate);
  unsigned word = 0;
  for (int i = 0; i < 32; ++i) word |= unsigned(*static_cast<const bool*>(lanes[i])) << i;
  ::sg_emu::release_warp();
  return word;
}

// The position (from 1) of the lowest set bit, 0 for none.
inline int __ffs(int x) { return __builtin_ffs(x); }

// One fiber runs at a time, so a read-modify-write is atomic.
template <typename T>
T atomicAdd(T* address, T value) {
  T old = *address;
  *address = old + value;
  return old;
}

// Device math that is not standard C++ (what kernels/cuda uses; add what a
// new kernel needs); host <cmath> supplies the rest.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// CUDA's min and max take mixed integer widths; std's do not.
template <typename A, typename B>
constexpr auto min(A a, B b) -> std::common_type_t<A, B> {
  return b < a ? b : a;
}
template <typename A, typename B>
constexpr auto max(A a, B b) -> std::common_type_t<A, B> {
  return a < b ? b : a;
}
