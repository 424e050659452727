#include "tests/cuda/fragment_kernels.h"

#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/mma.cuh"

namespace sg::test {
namespace {

// Two 16-bit values from anywhere as one register, `low` in the low half.
__device__ uint32_t gather_pair(const __nv_bfloat16* low, const __nv_bfloat16* high) {
  const __nv_bfloat16 halves[2] = {*low, *high};
  uint32_t bits;
  memcpy(&bits, halves, sizeof bits);
  return bits;
}

// The PTX ISA's m16n8k16 layout (groupID g = lane / 4, t = lane % 4):
//   a: rows g and g + 8, columns 2t, 2t + 1 and 2t + 8, 2t + 9
//   b: rows 2t, 2t + 1 and 2t + 8, 2t + 9, column g
//   d: rows g and g + 8, columns 2t, 2t + 1
__global__ void mma_kernel(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  uint32_t ra[4], rb[2];
  for (int reg = 0; reg < 4; ++reg) {
    const int row = g + (reg % 2) * 8, col = 2 * t + (reg / 2) * 8;
    ra[reg] = gather_pair(a + row * 16 + col, a + row * 16 + col + 1);
  }
  for (int reg = 0; reg < 2; ++reg) {
    const int row = 2 * t + reg * 8;
    rb[reg] = gather_pair(b + row * 8 + g, b + (row + 1) * 8 + g);
  }
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  sg::cuda::mma_16816<__nv_bfloat16>(acc, ra, rb);
  for (int i = 0; i < 4; ++i) d[(g + (i / 2) * 8) * 8 + 2 * t + i % 2] = acc[i];
}

// Rows 24 values (48 bytes) apart, as the attention's padded tiles are:
// 16-byte aligned, and not a multiple of 128 bytes.
constexpr int kStride = 24;

__global__ void ldmatrix_kernel(uint32_t* out, const uint16_t* matrix, bool transpose) {
  __shared__ alignas(16) uint16_t tile[16 * kStride];
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) tile[(i / 16) * kStride + i % 16] = matrix[i];
  __syncwarp();
  const int i = lane / 8, r = lane % 8;  // this lane names row r of matrix i
  const uint16_t* row = tile + (8 * (i % 2) + r) * kStride + 8 * (i / 2);
  uint32_t registers[4];
  if (transpose) sg::cuda::ldmatrix_x4<true>(registers, row);
  else sg::cuda::ldmatrix_x4(registers, row);
  for (int k = 0; k < 4; ++k) out[4 * lane + k] = registers[k];
}

}  // namespace

void mma_product(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b) {
  mma_kernel<<<1, 32>>>(d, a, b);
  SG_CHECK_LAUNCH();
}

void ldmatrix_registers(uint32_t* out, const uint16_t* matrix, bool transpose) {
  ldmatrix_kernel<<<1, 32>>>(out, matrix, transpose);
  SG_CHECK_LAUNCH();
}

}  // namespace sg::test
