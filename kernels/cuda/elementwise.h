// CUDA twins of kernels/cpu/elementwise.h. Functions taking a DType run f32,
// bf16 and f16 natively (loading to f32, computing, rounding once on store);
// the float* ones are f32 only. All launch on `stream` and return at once.
//
// Read next: kernels/cuda/matmul.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/sum_output.h"
#include "kernels/dtype.h"

namespace sg::cuda {

void add_forward(void* out, const void* a, const void* b, int64_t n, DType dtype, cudaStream_t stream);
void mul_forward(void* out, const void* a, const void* b, int64_t n, DType dtype, cudaStream_t stream);
void scale_forward(void* out, const void* in, float scale, int64_t n, DType dtype, cudaStream_t stream);
// out = in * (numerator[0] / denominator[0]), the two f32 scalars read on
// the device, or 0 where denominator[0] is 0; out may be in.
void scale_by_quotient(void* out, const void* in, const float* numerator, const float* denominator, int64_t n,
                       DType dtype, cudaStream_t stream);
// y (f32) += alpha * x, x in f32, bf16 or f16.
void axpy(float* y, float alpha, const void* x, DType x_dtype, int64_t n, cudaStream_t stream);

void gelu_forward(void* out, const void* in, int64_t n, DType dtype, cudaStream_t stream);
// din = dout * gelu'(in), written (not added).
void gelu_backward(void* din, const void* in, const void* dout, int64_t n, DType dtype, cudaStream_t stream);
// The same for h, dy (rows, cols), and dbias (cols, in its own dtype, written
// or added: SumOutput) = the column sums of dh, in the same pass over h and
// dy; partials: scratch of kColumnSumChunks * cols floats.
void gelu_bias_backward(void* dh, const SumOutput& dbias, float* partials, const void* h, const void* dy,
                        int64_t rows, int64_t cols, DType dtype, cudaStream_t stream);
// As the CPU's: h (rows, cols) += bias in place, y = gelu(h), one pass.
void bias_gelu_forward(void* y, void* h, const void* bias, int64_t rows, int64_t cols, DType dtype,
                       cudaStream_t stream);

void cast(void* out, DType out_dtype, const void* in, DType in_dtype, int64_t n, cudaStream_t stream);

// As cpu::strided_copy; at most kMaxCopyDims dimensions.
constexpr int kMaxCopyDims = 8;  // CopyPlan::kMaxDims (kernels/copy_plan.h): views are planned, then copied
void strided_copy(void* out, const int64_t* out_strides, const void* in, const int64_t* in_strides,
                  const int64_t* shape, int ndim, int64_t element_size, cudaStream_t stream);

void fill(void* out, DType dtype, double value, int64_t n, cudaStream_t stream);

}  // namespace sg::cuda
