// CUDA twins of kernels/cpu/matmul.h. GEMMs go through cuBLASLt
// (matmul_lt.h) where it has an algorithm, else cuBLAS
// (cublasGemmStridedBatchedEx), with f32 accumulation for every storage type;
// f32 GEMMs use exact f32 math (no TF32), so they match the CPU to 1e-5.
//
// Read next: kernels/cuda/matmul_lt.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/cuda/sum_output.h"
#include "kernels/gemm_shape.h"

namespace sg::cuda {

void matmul_forward(void* c, const void* a, const void* b, const GemmShape& shape, DType dtype, cudaStream_t stream);
// The same with C in c_dtype: f32 under 16-bit operands (a weight gradient
// written, or with beta = 1 added, straight into its f32 buffer), or dtype.
void matmul_forward(void* c, DType c_dtype, const void* a, const void* b, const GemmShape& shape, DType dtype,
                    cudaStream_t stream);
// A batch laid out as an (outer, inner) grid: matrix (o, i) starts at
// element o * outer_stride + i * inner_stride of base. Attention's q, k and
// v inside qkv form such a grid over (batch row, head), which no single
// batch stride describes.
struct MatrixGrid {
  const void* base;
  int64_t outer_stride, inner_stride;
};
// C(o, i) = alpha op(A(o, i)) op(B(o, i)) + beta C(o, i) for every o < outer,
// i < inner, with shape's m, n, k, transposes, leading dimensions, alpha and
// beta (its batch and strides unused): one cuBLAS pointer-array batched GEMM
// (cublasGemmBatchedEx) after one kernel writes the 3 x outer x inner
// matrix addresses into `pointers` (device scratch), where strided batches
// would take `outer` calls. False when it did not run (SG_GEMM_POINTER_ARRAYS=0,
// or cuBLAS refused the problem, said once on stderr): the caller then makes
// the strided calls.
bool matmul_grid(const MatrixGrid& c, const MatrixGrid& a, const MatrixGrid& b, int64_t outer, int64_t inner,
                 const GemmShape& shape, DType dtype, void** pointers, cudaStream_t stream);

void matmul_backward(void* da, void* db, const void* dc, const void* a, const void* b, const GemmShape& shape,
                     DType dtype, cudaStream_t stream);

// C = op(A) op(B) + bias (n) over every row: the bias in cuBLASLt's epilogue
// where it has an algorithm, else a second pass. Needs beta = 0 and a dense
// C (ldc = n, batches contiguous).
void matmul_bias_forward(void* c, const void* a, const void* b, const void* bias, const GemmShape& shape, DType dtype,
                         cudaStream_t stream);
void bias_add_forward(void* out, const void* bias, int64_t rows, int64_t cols, DType dtype, cudaStream_t stream);

// An MLP's GELU inside its GEMMs' epilogues (cuBLASLt): forward, h =
// op(A) op(B) + bias (GELU's input, kept for backward) and y = gelu(h);
// backward, dh = (op(A) op(B)) * gelu'(h). Each (m, n), dense, unbatched.
// False, with nothing written, when the switch is off (it is unless
// SG_GEMM_GELU_EPILOGUE=1: not yet timed on a GPU) or Lt has no algorithm:
// the caller then takes the GEMM and elementwise_kernels' GELU passes.
bool matmul_bias_gelu_forward(void* y, void* h, const void* a, const void* b, const void* bias,
                              const GemmShape& shape, DType dtype, cudaStream_t stream);
bool matmul_gelu_backward(void* dh, const void* a, const void* b, const void* h, const GemmShape& shape, DType dtype,
                          cudaStream_t stream);
// matmul_forward (C in c_dtype, written or with beta = 1 added) that also
// writes row_sums (m, in c_dtype) = the sums of op(A)'s rows, in one
// cuBLASLt GEMM (the BGRADB epilogue): a linear layer's weight gradient
// dW = dy^T x and its bias's gradient, the column sums of dy. A must be
// read transposed (trans_a), the problem unbatched. False, with nothing
// written, unless SG_GEMM_BIAS_GRAD_EPILOGUE=1 (not yet timed on a GPU)
// and Lt has an algorithm: the caller then takes the GEMM and the column
// sums' kernels.
bool matmul_forward_with_row_sums(void* c, DType c_dtype, void* row_sums, const void* a, const void* b,
                                  const GemmShape& shape, DType dtype, cudaStream_t stream);
// dbias (cols, written in dbias_dtype: f32, bf16 or f16) = the column sums
// of dout (rows, cols) in `dtype`, summed in f32; partials: scratch of
// kColumnSumChunks * cols floats (sum_output.h).
// dbias = the column sums of dout (rows, cols), written or added (SumOutput).
void bias_add_backward(const SumOutput& dbias, float* partials, const void* dout, int64_t rows, int64_t cols,
                       DType dtype, cudaStream_t stream);

}  // namespace sg::cuda
