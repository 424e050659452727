// PTX's warp-level mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32
// for the emulator: D (16x8, f32) = A (16x16) B (16x8) + C, each matrix
// spread over the warp's 32 lanes in the layout the PTX ISA documents
// ("Matrix Fragments for mma.m16n8k16 with floating point type"), with
// groupID g = lane >> 2 and t = lane % 4:
//   A: 4 registers of two 16-bit values (low half first):
//      a0,a1 (row g, cols 2t, 2t+1)      a2,a3 (row g+8, cols 2t, 2t+1)
//      a4,a5 (row g, cols 2t+8, 2t+9)    a6,a7 (row g+8, cols 2t+8, 2t+9)
//   B: 2 registers: b0,b1 (rows 2t, 2t+1, col g)  b2,b3 (rows 2t+8, 2t+9, col g)
//   C, D: 4 floats: c0,c1 (row g, cols 2t, 2t+1)  c2,c3 (row g+8, cols 2t, 2t+1)
// kernels/cuda/mma.cuh calls this in the emulator build and the instruction
// itself under nvcc, and the same for ldmatrix (below). The products are summed in float in k order; the
// hardware's order and rounding inside the sum are its own, so tests compare
// with a tolerance, as for any GEMM.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/error.h"

#include "tools/cuda_emu/simt.h"

namespace sg_emu {

struct MmaOperands {
  const uint32_t* a;
  const uint32_t* b;
  const float* c;
};

// The 16-bit value `half` (0 low, 1 high) of a register, as a float.
template <typename Half>
float mma_element(uint32_t reg, int half) {
  const uint16_t bits = uint16_t(half == 0 ? reg & 0xffffu : reg >> 16);
  Half value;
  std::memcpy(static_cast<void*>(&value), &bits, sizeof bits);
  if constexpr (std::is_same_v<Half, __nv_bfloat16>) return __bfloat162float(value);
  else return __half2float(value);
}

// A[row][col]: which lane holds it, and where in its registers.
template <typename Half>
float mma_a(const MmaOperands* const* lanes, int row, int col) {
  const int g = row % 8, t = (col % 8) / 2, reg = (row >= 8 ? 1 : 0) + (col >= 8 ? 2 : 0);
  return mma_element<Half>(lanes[g * 4 + t]->a[reg], col % 2);
}

template <typename Half>
float mma_b(const MmaOperands* const* lanes, int row, int col) {
  const int t = (row % 8) / 2, reg = row >= 8 ? 1 : 0;
  return mma_element<Half>(lanes[col * 4 + t]->b[reg], row % 2);
}

template <typename Half>
void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  const MmaOperands mine{a, b, c};
  const auto* const* lanes = reinterpret_cast<const MmaOperands* const*>(gather_from_warp(&mine));
  const int lane = lane_id(), g = lane >> 2, t = lane % 4;
  float result[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    float sum = c[i];
    for (int k = 0; k < 16; ++k) sum += mma_a<Half>(lanes, row, k) * mma_b<Half>(lanes, k, col);
    result[i] = sum;
  }
  release_warp();  // every lane has read the others' registers
  for (int i = 0; i < 4; ++i) d[i] = result[i];
}

// PTX's ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16: four 8x8
// matrices of 16-bit values from shared memory into four registers a lane.
// Lane 8 i + r gives the address of row r of matrix i (16 bytes, 16-byte
// aligned); register i of lane L then holds, low half first,
//   without .trans: row L / 4, columns 2 (L % 4) and 2 (L % 4) + 1 of matrix i
//   with .trans:    rows 2 (L % 4) and 2 (L % 4) + 1 of column L / 4
// (the PTX ISA's "ldmatrix" fragment figures). Without .trans that is an
// mma A or B^T fragment of rows stored row-major; with it, a B fragment of
// a matrix stored row-major (mma.h's B is k-major).
template <bool Transpose>
void ldmatrix_x4(uint32_t (&r)[4], const void* row_address) {
  SG_CHECK(reinterpret_cast<uintptr_t>(row_address) % 16 == 0, "CUDA emulator: ldmatrix row address ", row_address,
           " of lane ", lane_id(), " is not 16-byte aligned");
  SG_CHECK(in_shared_memory(row_address, 16), "CUDA emulator: ldmatrix row address ", row_address, " of lane ",
           lane_id(), " is not in the block's shared memory");
  const auto* const* rows = reinterpret_cast<const uint16_t* const*>(gather_from_warp(row_address));
  const int lane = lane_id();
  uint32_t result[4];
  for (int i = 0; i < 4; ++i) {
    uint16_t low, high;
    if (Transpose) {
      low = rows[8 * i + 2 * (lane % 4)][lane / 4];
      high = rows[8 * i + 2 * (lane % 4) + 1][lane / 4];
    } else {
      low = rows[8 * i + lane / 4][2 * (lane % 4)];
      high = rows[8 * i + lane / 4][2 * (lane % 4) + 1];
    }
    result[i] = uint32_t(low) | uint32_t(high) << 16;
  }
  release_warp();
  for (int i = 0; i < 4; ++i) r[i] = result[i];
}

}  // namespace sg_emu
