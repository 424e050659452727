// cuBLASLt GEMMs (matmul_lt.cu): the same row-major problem as
// matmul_forward, optionally with a bias over the output's columns added in
// the GEMM's epilogue (no second pass over the output). Returns false when
// cuBLASLt has no algorithm for the problem (the caller then uses cuBLAS);
// SG_CUBLASLT=0 turns it off. Plans are cached per shape, dtype and pointer
// alignment.
//
// Read next: kernels/cuda/normalization.h.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/dtype.h"
#include "kernels/gemm_shape.h"

namespace sg::cuda {

// C (in c_dtype: dtype, or f32 under 16-bit operands) = op(A) op(B) [+ bias]
// [+ beta C]; false when Lt has no algorithm for it (the caller uses cuBLAS).
bool lt_matmul(void* c, DType c_dtype, const void* a, const void* b, const void* bias, const GemmShape& shape,
               DType dtype, cudaStream_t stream);

// For bench_gemm, which times cuBLASLt's candidates against each other: plans
// made from now on take the candidate-th (0-15) of the heuristic's answers
// instead of its first (0, the default), and lt_matmul returns false where
// it gave fewer; lt_candidates_found() is how many it gave the newest plan.
void set_lt_candidate(int candidate);
int lt_candidates_found();

// How many plans SG_GEMM_AUTOTUNE=N has timed so far (matmul_lt.cu): the
// first N of the heuristic's answers on a problem's first call, the fastest
// kept. Off by default (a run is then not bit-for-bit repeatable).
int lt_plans_autotuned();

}  // namespace sg::cuda
