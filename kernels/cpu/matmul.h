// CPU matrix multiply (Eigen) and its backward, plus the bias of a Linear layer.
//
// matmul_forward computes C = alpha * op(A) @ op(B) + beta * C over a batch,
// exactly as kernels/gemm_shape.h describes. matmul_backward accumulates
// (+=) dA and dB, each stored like its input. Large GEMMs are threaded by Eigen
// itself (OpenMP); batches of small ones are spread over threads instead.
//
// Read next: kernels/cpu/elementwise.h.
#pragma once

#include <cstdint>

#include "kernels/gemm_shape.h"

namespace sg::cpu {

void matmul_forward(float* c, const float* a, const float* b, const GemmShape& shape);

// dA += dC @ op(B)^T (stored like A), dB += op(A)^T @ dC (stored like B).
// Either output may be null to skip it.
void matmul_backward(float* da, float* db, const float* dc, const float* a, const float* b,
                     const GemmShape& shape);

// out (rows, cols) += bias (cols), broadcast over rows.
void bias_add_forward(float* out, const float* bias, int64_t rows, int64_t cols);

// dbias (cols) += sum over rows of dout (rows, cols).
void bias_add_backward(float* dbias, const float* dout, int64_t rows, int64_t cols);

}  // namespace sg::cpu
