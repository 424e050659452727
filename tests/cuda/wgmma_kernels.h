// A probe of Hopper's warpgroup MMA as kernels/cuda/wgmma.cuh issues it
// (built for sm_90a alone in the nvcc build; tests/cuda/test_fragments.cpp).
// On an H100 it checks that wgmma.cuh and tools/cuda_emu/wgmma.h read the
// PTX ISA's descriptors and fragments as the hardware does; in the
// emulator, that the emulator implements that reading.
#pragma once

#include <cuda_bf16.h>

namespace sg::test {

// The forms of wgmma the attention kernels issue:
//   kSharedK64: m64n64k16, A and B both K-major in shared memory (S = Q K^T);
//   kSharedK32: m64n32k16, the same with B's first 32 columns (dK/dV's S^T);
//   kRegistersN64: m64n64k16, A from registers, B N-major (O += P V).
// The descriptors' LBO and SBO are as wgmma.cuh reads the documentation
// or (swap_strides; kSharedK64 and kRegistersN64) the other way round, to
// tell which the hardware takes. The operands lie in 8 KiB of shared memory
// each, zeros past the tile, so the other reading reads in bounds.
enum class WgmmaForm { kSharedK64, kSharedK32, kRegistersN64 };

// d (64 x 64, f32, row-major) = 2 a b through two wgmma (the first without
// the accumulators, the second adding to them), a (64 x 16) and b (16 x
// 64) bf16 row-major on the device; kSharedK32 writes d's first 32 columns
// only. One warpgroup.
void wgmma_product(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, WgmmaForm form,
                   bool swap_strides = false);

}  // namespace sg::test
