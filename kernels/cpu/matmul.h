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

template <typename T>  // float or double
void matmul_forward(T* c, const T* a, const T* b, const GemmShape& shape);

// dA += dC @ op(B)^T (stored like A), dB += op(A)^T @ dC (stored like B).
// Either output may be null to skip it.
template <typename T>
void matmul_backward(T* da, T* db, const T* dc, const T* a, const T* b, const GemmShape& shape);

// out (rows, cols) += bias (cols), broadcast over rows.
template <typename T>
void bias_add_forward(T* out, const T* bias, int64_t rows, int64_t cols);

// dbias (cols) += sum over rows of dout (rows, cols).
template <typename T>
void bias_add_backward(T* dbias, const T* dout, int64_t rows, int64_t cols);

}  // namespace sg::cpu
