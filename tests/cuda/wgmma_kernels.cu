#include "tests/cuda/wgmma_kernels.h"

#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/wgmma.cuh"

namespace sg::test {
namespace {

// Shared memory without swizzling, in core matrices of 8 rows of 16 bytes:
//   a_tile, K-major: element (m, k) at (k / 8) 1024 + 16 m + 2 (k % 8) bytes
//     (LBO 1024 along K, SBO 128 along M);
//   b_tile, K-major: element (n, k) likewise;
//   b_tile, N-major: element (k, n) at (n / 8) 256 + 16 k + 2 (n % 8) bytes
//     (LBO 128 along K, SBO 256 along N: different, so the two readings differ).
// Each array is 8 KiB, the tile in its first 2 and zeros after: the other
// reading of a K-major descriptor (LBO 128 along M, SBO 1024 along K)
// reaches 7.4 KiB, and must read wrong values, not fault.
__global__ void wgmma_kernel(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, WgmmaForm form, bool swap) {
  constexpr int kRoom = 4 * 64 * 16;
  const bool a_in_registers = form == WgmmaForm::kRegistersN64;
  __shared__ alignas(128) __nv_bfloat16 a_tile[kRoom];
  __shared__ alignas(128) __nv_bfloat16 b_tile[kRoom];
  const int thread = threadIdx.x, warp = thread / 32, lane = thread % 32, g = lane / 4, t = lane % 4;
  for (int i = thread; i < kRoom; i += 128) {
    a_tile[i] = __float2bfloat16(0.0f);
    b_tile[i] = __float2bfloat16(0.0f);
  }
  __syncthreads();
  for (int i = thread; i < 64 * 16; i += 128) {
    const int m = i / 16, k = i % 16;
    a_tile[(k / 8) * 512 + 8 * m + k % 8] = a[i];
  }
  for (int i = thread; i < 16 * 64; i += 128) {
    const int k = i / 64, n = i % 64;
    if (a_in_registers) b_tile[(n / 8) * 128 + 8 * k + n % 8] = b[i];
    else b_tile[(k / 8) * 512 + 8 * n + k % 8] = b[i];
  }
  sg::cuda::fence_shared_for_wgmma();
  __syncthreads();
  float acc[32];
  for (int i = 0; i < 32; ++i) acc[i] = -1.0f;  // the first product must ignore these
  uint32_t regs[4];
  for (int reg = 0; reg < 4; ++reg) {  // mma.sync's A fragment of this warp's rows 16 warp..
    const int row = 16 * warp + g + (reg % 2) * 8, col = 2 * t + (reg / 2) * 8;
    const __nv_bfloat16 halves[2] = {a[row * 16 + col], a[row * 16 + col + 1]};
    memcpy(&regs[reg], halves, sizeof regs[reg]);
  }
  sg::cuda::hold_registers(acc);
  sg::cuda::wgmma_fence();
  if (a_in_registers) {
    const sg::cuda::SharedOperand b_operand =
        swap ? sg::cuda::shared_operand(b_tile, 256, 128) : sg::cuda::shared_operand(b_tile, 128, 256);
    sg::cuda::wgmma_rs_n_major<__nv_bfloat16>(acc, regs, b_operand, false);
    sg::cuda::wgmma_rs_n_major<__nv_bfloat16>(acc, regs, b_operand, true);
  } else if (form == WgmmaForm::kSharedK64) {
    const uint32_t k_step = swap ? 128 : 1024, mn_step = swap ? 1024 : 128;
    const sg::cuda::SharedOperand a_operand = sg::cuda::shared_operand(a_tile, k_step, mn_step);
    const sg::cuda::SharedOperand b_operand = sg::cuda::shared_operand(b_tile, k_step, mn_step);
    sg::cuda::wgmma_ss<__nv_bfloat16, 64>(acc, a_operand, b_operand, false);
    sg::cuda::wgmma_ss<__nv_bfloat16, 64>(acc, a_operand, b_operand, true);
  } else {  // B's rows (columns of the product) 0..31: 4 core matrices along N
    float(&half)[16] = reinterpret_cast<float(&)[16]>(acc);
    const sg::cuda::SharedOperand a_operand = sg::cuda::shared_operand(a_tile, 1024, 128);
    const sg::cuda::SharedOperand b_operand = sg::cuda::shared_operand(b_tile, 1024, 128);
    sg::cuda::wgmma_ss<__nv_bfloat16, 32>(half, a_operand, b_operand, false);
    sg::cuda::wgmma_ss<__nv_bfloat16, 32>(half, a_operand, b_operand, true);
  }
  sg::cuda::wgmma_commit();
  sg::cuda::wgmma_wait<0>();
  sg::cuda::hold_registers(acc);
  sg::cuda::hold_registers(regs);
  const int columns = form == WgmmaForm::kSharedK32 ? 16 : 32;
  for (int i = 0; i < columns; ++i) {  // mma.sync's accumulator layout, N / 8 column blocks side by side
    const int row = 16 * warp + g + ((i % 4) >= 2 ? 8 : 0), col = 8 * (i / 4) + 2 * t + i % 2;
    d[row * 64 + col] = acc[i];
  }
}

}  // namespace

void wgmma_product(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, WgmmaForm form, bool swap_strides) {
  wgmma_kernel<<<1, 128>>>(d, a, b, form, swap_strides);
  SG_CHECK_LAUNCH();
}

}  // namespace sg::test
