// Probes of the tensor-core instructions the fused attention is built on
// (kernels/cuda/mma.cuh): each launches one warp on the default stream
// (a cudaMemcpy afterwards waits for it).
// On a GPU they check that mma.cuh reads the PTX ISA's fragment layouts as
// the hardware does; in the emulator, that tools/cuda_emu/mma.h does too.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace sg::test {

// d (16x8, f32) = a (16x16 bf16) b (16x8 bf16), all row-major on the device,
// through mma.sync m16n8k16, each lane filling its registers by hand from
// the documented layout.
void mma_product(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b);

// The 16x16 row-major `matrix` (16-bit values) goes into padded shared
// memory; one ldmatrix .x4 (.trans when `transpose`) reads its four 8x8
// quarters, matrix i at rows 8 (i % 2), columns 8 (i / 2). out[4 lane + i]
// is lane's register i.
void ldmatrix_registers(uint32_t* out, const uint16_t* matrix, bool transpose);

}  // namespace sg::test
