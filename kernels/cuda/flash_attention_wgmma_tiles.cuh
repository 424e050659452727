// Internal to kernels/cuda/flash_attention_wgmma*.cu: the tiles and
// operands of the attention kernels on Hopper's warpgroup MMA (the layout
// is described at the top of flash_attention_wgmma.cu), beside the mma.sync
// kernels' own (flash_attention_tc_tiles.cuh), whose softmax and
// accumulator code they share.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>

#include "kernels/cuda/flash_attention_tc_tiles.cuh"
#include "kernels/cuda/wgmma.cuh"
#include "kernels/dtype.h"
#include "kernels/env_switch.h"

namespace sg::cuda {
namespace {

constexpr int kWgmmaHeadSize = 64;
constexpr int kCoreTileElements = kTile * kWgmmaHeadSize;  // 8 KiB in 16 bits
constexpr uint32_t kChunkBytes = 16 * kTile;               // one column chunk of the 64 rows: 1 KiB

// Starts tile rows r < 64 = src rows first + r (0 past T), in the core-matrix
// layout: element (r, c) at (c / 8) 512 + 8 r + c % 8. Threads 2 i and 2 i
// + 1 copy two adjacent chunks of one row: a warp reads 16 rows' 32-byte
// sectors whole, and its 512 bytes of stores fill 4 wavefronts of shared
// memory, no more.
template <typename T>
__device__ void fetch_core_tile(T* tile, const T* src, int64_t row_stride, int64_t first, int64_t T_) {
  constexpr int kChunks = kWgmmaHeadSize / 8;
  for (int index = threadIdx.x; index < kTile * kChunks; index += blockDim.x) {
    const int r = (index / 2) % kTile, j = 2 * (index / (2 * kTile)) + index % 2;
    const bool inside = first + r < T_;
    async_copy<16>(tile + j * 8 * kTile + 8 * r, inside ? src + (first + r) * row_stride + 8 * j : src, inside);
  }
}

// Keys k0.. of K, then V, into buffer `buffer` (two tiles), as one group.
template <typename T>
__device__ void fetch_core_keys_values(T* tiles, int buffer, const T* base, int64_t C, int64_t k0, int64_t T_) {
  T* k_tile = tiles + 2 * buffer * kCoreTileElements;
  fetch_core_tile(k_tile, base + C, 3 * C, k0, T_);
  fetch_core_tile(k_tile + kCoreTileElements, base + 2 * C, 3 * C, k0, T_);
  async_commit();
}

// The overlapped forward's staging (flash_attention_wgmma.cu): the keys of
// K from `next_k0` (none if negative) into the K slot of their tile, and
// the values of V from `v0` into the V slot of theirs, as one group. Key
// tile k0 / 64 lives in slot (k0 / 64) % 2: its K at tiles + 2 slot
// kCoreTileElements, its V just after.
template <typename T>
__device__ void fetch_core_next_keys_and_values(T* tiles, const T* base, int64_t C, int64_t next_k0, int64_t v0,
                                                int64_t T_) {
  if (next_k0 >= 0) {
    fetch_core_tile(tiles + 2 * (next_k0 / kTile % 2) * kCoreTileElements, base + C, 3 * C, next_k0, T_);
  }
  fetch_core_tile(tiles + (2 * (v0 / kTile % 2) + 1) * kCoreTileElements, base + 2 * C, 3 * C, v0, T_);
  async_commit();
}

// Columns 16 kk..16 kk + 15 of a tile whose rows are M or N (Q, K): core
// matrices 1 KiB apart along K, 128 bytes along the rows.
// From row r0 on (a multiple of 8; N = 32 rows for a half tile).
template <typename T>
__device__ __forceinline__ SharedOperand k_major(const T* tile, int kk, int r0 = 0) {
  return shared_operand(tile + 2 * kk * 8 * kTile + 8 * r0, kChunkBytes, 128);
}

// Rows 16 kk..16 kk + 15 of a tile whose rows are K (V): core matrices 128
// bytes apart along K, 1 KiB along N (the head's columns).
template <typename T>
__device__ __forceinline__ SharedOperand n_major(const T* tile, int kk) {
  return shared_operand(tile + 16 * kk * 8, 128, kChunkBytes);
}

// wgmma code (sm_90a) runs on compute capability 9.0 alone (the emulator
// plays an H100). Asked of the runtime once per device, then remembered.
inline bool device_has_wgmma() {
  constexpr int kDevices = 64;
  static std::atomic<int> known[kDevices] = {};  // 0 not yet asked, 1 no, 2 yes
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0) return false;
  if (device < kDevices && known[device].load(std::memory_order_relaxed) != 0) return known[device] == 2;
  int major = 0, minor = 0;
  const bool asked = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                     cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess;
  const bool hopper = asked && major == 9 && minor == 0;
  if (asked && device < kDevices) known[device].store(hopper ? 2 : 1, std::memory_order_relaxed);
  return hopper;
}

// Whether the wgmma kernels take this problem: SG_FLASH_WGMMA=1, head size
// 64, 16-bit, a compute capability 9.0 device.
inline bool wgmma_attention_applies(int64_t C, int64_t NH, DType dtype) {
  return env_switch_opted_in("SG_FLASH_WGMMA") && NH > 0 && C == NH * kWgmmaHeadSize &&
         (dtype == DType::bf16 || dtype == DType::f16) && device_has_wgmma();
}

}  // namespace
}  // namespace sg::cuda
