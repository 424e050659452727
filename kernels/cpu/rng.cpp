#include "kernels/cpu/rng.h"

#include "kernels/philox.h"

namespace sg::cpu {

void uniform_fill(float* out, int64_t n, int64_t first_index, uint64_t seed, uint64_t stream, float low,
                  float high) {
#pragma omp parallel for schedule(static) if (n > (1 << 14))
  for (int64_t i = 0; i < n; ++i) {
    PhiloxBlock block = philox_for_element(seed, stream, uint64_t(first_index + i));
    out[i] = affine_exact(uniform_from_bits(block.x[0]), high - low, low);
  }
}

void normal_fill(float* out, int64_t n, int64_t first_index, uint64_t seed, uint64_t stream, float mean,
                 float std) {
#pragma omp parallel for schedule(static) if (n > (1 << 14))
  for (int64_t i = 0; i < n; ++i) {
    PhiloxBlock block = philox_for_element(seed, stream, uint64_t(first_index + i));
    out[i] = affine_exact(normal_from_block(block), std, mean);
  }
}

}  // namespace sg::cpu
