// Internal to kernels/cuda: the tensor cores' warp-level matrix multiply
// (PTX mma.sync m16n8k16, bf16 or f16 inputs, f32 sums) and the register
// packing around it.
//
// Unlike WMMA, whose fragments hide which lane holds which element, the PTX
// instruction documents its layout (tools/cuda_emu/mma.h spells it out), so
// a kernel knows the row and column of every value it holds. That is what a
// fused attention kernel needs: the online softmax runs on the scores where
// the product left them, in registers, with a shuffle among the four lanes
// that share a row, and the probabilities go straight back in as the next
// product's A operand (the accumulator layout of two 16x8 tiles is the A
// layout of one 16x16 tile).
//
// Read next: kernels/cuda/async_copy.cuh.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/cuda/float_types.cuh"

namespace sg::cuda {

// d += a b for one 16x8x16 tile: a holds A (16x16, row-major fragments), b
// holds B (16x8, column fragments), d the 16x8 f32 accumulator.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef SG_CUDA_EMULATOR
  ::sg_emu::mma_m16n8k16<T>(d, a, b, d);
#else
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

// Four 8x8 matrices of 16-bit values from shared memory in one instruction
// (PTX ldmatrix .x4): lane 8 i + r passes the address of row r of matrix i
// (16 bytes, 16-byte aligned). Register i of lane L gets matrix i's row L / 4,
// columns 2 (L % 4) and 2 (L % 4) + 1: an mma fragment, as loaded by hand
// with eight 32-bit loads across the warp, but as one shared-memory access.
// ldmatrix_x4<true> (.trans) gets rows 2 (L % 4) and 2 (L % 4) + 1 of
// column L / 4 instead: the B fragment of a matrix stored row-major, which
// by hand takes two 16-bit loads a register. tools/cuda_emu/mma.h spells the
// layout out.
template <bool Transpose = false>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_address) {
#ifdef SG_CUDA_EMULATOR
  ::sg_emu::ldmatrix_x4<Transpose>(r, row_address);
#else
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row_address));
  if constexpr (Transpose) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
  }
#endif
}

// Two 16-bit values as one register, `low` in the low half.
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(float low, float high) {
  const T halves[2] = {store<T>(low), store<T>(high)};
  uint32_t bits;
  memcpy(&bits, halves, sizeof bits);
  return bits;
}

// The two 16-bit values of a register, `low` from the low half.
template <typename T>
__device__ __forceinline__ void unpack_pair(uint32_t bits, float& low, float& high) {
  T halves[2];
  memcpy(static_cast<void*>(halves), &bits, sizeof bits);  // (void*: T is trivially copyable, whatever g++ fears)
  low = load(halves[0]);
  high = load(halves[1]);
}

// p[0] and p[1] (adjacent, 4-byte aligned) as one register.
template <typename T>
__device__ __forceinline__ uint32_t load_pair(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

}  // namespace sg::cuda
