// CPU reductions of a whole buffer to one float, written to *out (a pointer,
// like the CUDA twins, whose result stays on the device). Sums accumulate in
// double: the reference must be more accurate than what it checks.
//
// Read next: kernels/cpu/adamw.h.
#pragma once

#include <cstdint>

namespace sg::cpu {

void sum_forward(float* out, const float* in, int64_t n);           // sum_i x_i
void max_forward(float* out, const float* in, int64_t n);           // max_i x_i (-inf when n == 0)
void squared_norm_forward(float* out, const float* in, int64_t n);  // sum_i x_i^2, for clipping

}  // namespace sg::cpu
