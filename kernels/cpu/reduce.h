// CPU reductions of a whole buffer to one T, written to *out (a pointer,
// like the CUDA twins, whose result stays on the device). Sums accumulate in
// double: the reference must be more accurate than what it checks.
//
// Read next: kernels/cpu/adamw.h.
#pragma once

#include <cstdint>

namespace sg::cpu {

template <typename T>
void sum_forward(T* out, const T* in, int64_t n);           // sum_i x_i
template <typename T>
void max_forward(T* out, const T* in, int64_t n);           // max_i x_i (-inf when n == 0)
template <typename T>
void squared_norm_forward(T* out, const T* in, int64_t n);  // sum_i x_i^2, for clipping
template <typename T>
double squared_sum(const T* in, int64_t n);  // the same, before its rounding to T

}  // namespace sg::cpu
