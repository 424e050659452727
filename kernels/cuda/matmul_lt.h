// cuBLASLt GEMMs (matmul_lt.cu): the same row-major problem as
// matmul_forward, optionally with a bias over the output's columns added in
// the GEMM's epilogue (no second pass over the output), and GELU or its
// derivative applied there too (an MLP's two GEMMs). Returns false when
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

// What the GEMM's epilogue does after the product, on the way out.
struct LtEpilogue {
  const void* bias = nullptr;  // + bias (n) over the output's rows, in dtype, 16-byte aligned
  // GELU (tanh form), with aux (m, n), dense, in dtype: forward, aux =
  // product + bias (GELU's input, kept for backward) and C = gelu(aux);
  // backward, C = product * gelu'(aux) (no bias). Unbatched, beta = 0,
  // C dense (ldc = n) and in dtype.
  enum class Gelu { none, forward, backward } gelu = Gelu::none;
  void* aux = nullptr;
  // The sums of op(A)'s rows over k (m), written in c_dtype, 16-byte
  // aligned: a linear layer's bias gradient from its weight gradient's
  // GEMM (dW = dy^T x, op(A) = dy^T). A must be read transposed, and the
  // problem unbatched, with no other epilogue.
  void* a_row_sums = nullptr;
};

// C (in c_dtype: dtype, or f32 under 16-bit operands) = op(A) op(B) [+ beta
// C], then the epilogue; false when Lt has no algorithm for it (the caller
// uses cuBLAS, and another pass for the epilogue's work).
bool lt_matmul(void* c, DType c_dtype, const void* a, const void* b, const LtEpilogue& epilogue,
               const GemmShape& shape, DType dtype, cudaStream_t stream);

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

// How many GEMMs have run with a GELU epilogue (either direction), and with
// the row sums, for the tests.
struct LtEpilogueCounts {
  int64_t gelu = 0, row_sums = 0;
};
LtEpilogueCounts lt_epilogue_gemms();

}  // namespace sg::cuda
