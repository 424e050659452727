// CPU random fills from the Philox counter generator (kernels/philox.h).
// Element i of the buffer is global element (first_index + i) of the tensor,
// so a shard passes its own first index and gets the whole tensor's values.
//
// Read next: kernels/cuda/runtime.h (or tensor/tensor.h to go up a layer).
#pragma once

#include <cstdint>

namespace sg::cpu {

// out[i] = low + (high - low) * U(seed, stream, first_index + i), U in [0, 1).
void uniform_fill(float* out, int64_t n, int64_t first_index, uint64_t seed, uint64_t stream, float low,
                  float high);

// out[i] = mean + std * N(seed, stream, first_index + i), N standard normal.
void normal_fill(float* out, int64_t n, int64_t first_index, uint64_t seed, uint64_t stream, float mean,
                 float std);

}  // namespace sg::cpu
