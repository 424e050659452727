// CPU elementwise kernels: arithmetic, GELU, casts, strided copies and fills.
// All buffers are contiguous; n counts elements. Templated kernels exist for
// T = float (training) and T = double (f64 gradient checks). Backward kernels accumulate
// into their gradient outputs (+=), because a tensor used twice receives the
// sum of both uses' gradients.
//
// Read next: kernels/cpu/normalization.h.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace sg::cpu {

template <typename T>
void add_forward(T* out, const T* a, const T* b, int64_t n);  // out = a + b
template <typename T>
void mul_forward(T* out, const T* a, const T* b, int64_t n);  // out = a * b
template <typename T>
void scale_forward(T* out, const T* in, T scale, int64_t n);  // out = scale * in

// y += alpha * x. The backward of add (alpha = 1) and of scale (alpha = scale).
template <typename T>
void axpy(T* y, T alpha, const T* x, int64_t n);

// GELU, tanh approximation (GPT-2's):
//   y = x/2 * (1 + tanh(u)),  u = sqrt(2/pi) * (x + 0.044715 x^3)
template <typename T>
void gelu_forward(T* out, const T* in, int64_t n);
// din += dout * dy/dx, with
//   dy/dx = (1 + tanh u)/2 + x/2 * (1 - tanh^2 u) * sqrt(2/pi) * (1 + 3 * 0.044715 x^2)
template <typename T>
void gelu_backward(T* din, const T* in, const T* dout, int64_t n);

// linear + GELU's epilogue, fused (f32): h (rows, cols) += bias in place and
// y = gelu(h) in the same pass; backward dh = dy * gelu'(h) (written, not
// accumulated). One pass over the activation instead of two or three.
void bias_gelu_forward(float* y, float* h, const float* bias, int64_t rows, int64_t cols);
void bias_gelu_backward(float* dh, const float* h, const float* dy, int64_t n);

// out[i] = convert(in[i]) between any two dtypes (floats round to nearest even;
// float -> integer truncates toward zero, as C++ and PyTorch do).
void cast(void* out, DType out_dtype, const void* in, DType in_dtype, int64_t n);

// Copies between two strided views of the same shape: for every index
// (i0, i1, ...), out[sum_d i_d * out_strides[d]] = in[sum_d i_d * in_strides[d]]
// (strides in elements). Makes views contiguous, and writes into views.
void strided_copy(void* out, const int64_t* out_strides, const void* in, const int64_t* in_strides,
                  const int64_t* shape, int ndim, int64_t element_size);

// out[i] = value, written in out's dtype.
void fill(void* out, DType dtype, double value, int64_t n);

}  // namespace sg::cpu
