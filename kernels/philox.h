// Philox 4x32-10: the counter-based random generator of Salmon et al.,
// "Parallel Random Numbers: As Easy as 1, 2, 3" (SC 2011).
//
// Why counter-based: the random value of element i is a pure function
// philox(counter = f(i, name), key = seed). Nothing is carried from one
// element to the next, so rank 3 can fill only its shard of a parameter and
// get exactly the numbers that one process filling the whole tensor would see
// at those indices, on CPU or on CUDA. That is what lets ZeRO-3 parameters be
// "born partitioned" with no broadcast.
//
// This header is compiled by both g++ and nvcc (SG_HOST_DEVICE), so the CPU
// and CUDA fills run literally the same code.
//
// Read next: kernels/cpu/rng.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/host_device.h"

namespace sg {

struct PhiloxBlock {
  uint32_t x[4];
};

// One 32x32 -> 64-bit multiply split into its high and low words.
SG_HOST_DEVICE inline void mul_hi_lo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  uint64_t product = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(product >> 32);
  *lo = uint32_t(product);
}

// Ten rounds of the Philox S-box over a 128-bit counter with a 64-bit key.
// Constants are the published ones (multipliers and Weyl key increments).
SG_HOST_DEVICE inline PhiloxBlock philox4x32_10(PhiloxBlock counter, uint32_t key0, uint32_t key1) {
  const uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  const uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mul_hi_lo(kMul0, counter.x[0], &hi0, &lo0);
    mul_hi_lo(kMul1, counter.x[2], &hi1, &lo1);
    counter = PhiloxBlock{{hi1 ^ counter.x[1] ^ key0, lo1, hi0 ^ counter.x[3] ^ key1, lo0}};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return counter;
}

// The block for global element `index` of the stream `stream` (a hash of the
// tensor's name) under `seed`. One block per element: simple, and the element
// index alone decides the value.
SG_HOST_DEVICE inline PhiloxBlock philox_for_element(uint64_t seed, uint64_t stream, uint64_t index) {
  PhiloxBlock counter{{uint32_t(index), uint32_t(index >> 32), uint32_t(stream), uint32_t(stream >> 32)}};
  return philox4x32_10(counter, uint32_t(seed), uint32_t(seed >> 32));
}

// 24 random bits -> a float in [0, 1), exactly representable, so CPU and CUDA agree bit for bit.
SG_HOST_DEVICE inline float uniform_from_bits(uint32_t bits) {
  return float(bits >> 8) * (1.0f / 16777216.0f);
}

// shift + scale * value rounded after each operation on CPU and GPU alike.
// nvcc would otherwise fuse it into one FMA (one rounding) and the bits of a
// CUDA fill would differ from the CPU's; the CPU build uses -ffp-contract=off.
SG_HOST_DEVICE inline float affine_exact(float value, float scale, float shift) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(scale, value), shift);
#else
  return scale * value + shift;
#endif
}

// Box-Muller: two uniforms -> one standard normal. Computed in double and
// rounded once to float, so the CPU and CUDA results agree unless their
// double log/cos differ by an ulp right at a float rounding boundary
// (odds about 1 in 2^29 per element).
SG_HOST_DEVICE inline float normal_from_block(PhiloxBlock block) {
  double u1 = (double(block.x[0] >> 8) + 1.0) * (1.0 / 16777216.0);  // (0, 1]: log is finite
  double u2 = double(block.x[1] >> 8) * (1.0 / 16777216.0);          // [0, 1)
  return float(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

}  // namespace sg
