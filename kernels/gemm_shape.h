// GemmShape: the description of one (batched) matrix multiply shared by the
// CPU (Eigen) and CUDA (cuBLAS) GEMMs, so both are called the same way.
//
//   C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b]     for b in [0, batch)
//
// All matrices are row-major. op(A) is (m, k): A is stored (m, k), or (k, m)
// with trans_a. op(B) is (k, n): B is stored (k, n), or (n, k) with trans_b.
// lda/ldb/ldc are row strides in elements (a transposed view of a tensor is a
// transpose flag here, not a copy); stride_* step from one batch to the next.
//
// Read next: kernels/cpu/matmul.h.
#pragma once

#include <cstdint>

namespace sg {

struct GemmShape {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  float alpha = 1.0f, beta = 0.0f;

  // A dense, contiguous problem: lds and batch strides follow from the sizes.
  static GemmShape dense(int64_t m, int64_t n, int64_t k, bool trans_a = false, bool trans_b = false,
                         int64_t batch = 1) {
    GemmShape s;
    s.m = m, s.n = n, s.k = k, s.trans_a = trans_a, s.trans_b = trans_b, s.batch = batch;
    s.lda = trans_a ? m : k;
    s.ldb = trans_b ? k : n;
    s.ldc = n;
    s.stride_a = m * k, s.stride_b = k * n, s.stride_c = m * n;
    return s;
  }

  // The two GEMMs of the backward pass. With C = op(A) op(B):
  //   d op(A) = dC @ op(B)^T      d op(B) = op(A)^T @ dC
  // and when A is stored transposed, dA (stored like A) is d op(A)^T = op(B) @ dC^T
  // (likewise for B). Gradients accumulate (beta = 1): dA is stored like A
  // (lda, stride_a) and dB like B. The returned shapes name which pointer plays
  // "A" and "B" through the flags documented at each.
  //
  // grad_a_shape: computes dA. If !trans_a it reads (dC, B); if trans_a (B, dC).
  GemmShape grad_a_shape() const {
    GemmShape g;
    g.batch = batch, g.alpha = alpha, g.beta = 1.0f;
    g.ldc = lda, g.stride_c = stride_a;
    if (!trans_a) {  // dA (m, k) = dC (m, n) @ op(B)^T (n, k)
      g.m = m, g.n = k, g.k = n;
      g.trans_a = false, g.lda = ldc, g.stride_a = stride_c;
      g.trans_b = !trans_b, g.ldb = ldb, g.stride_b = stride_b;
    } else {  // dA (k, m) = op(B) (k, n) @ dC^T (n, m)
      g.m = k, g.n = m, g.k = n;
      g.trans_a = trans_b, g.lda = ldb, g.stride_a = stride_b;
      g.trans_b = true, g.ldb = ldc, g.stride_b = stride_c;
    }
    return g;
  }

  // grad_b_shape: computes dB. If !trans_b it reads (A, dC); if trans_b (dC, A).
  GemmShape grad_b_shape() const {
    GemmShape g;
    g.batch = batch, g.alpha = alpha, g.beta = 1.0f;
    g.ldc = ldb, g.stride_c = stride_b;
    if (!trans_b) {  // dB (k, n) = op(A)^T (k, m) @ dC (m, n)
      g.m = k, g.n = n, g.k = m;
      g.trans_a = !trans_a, g.lda = lda, g.stride_a = stride_a;
      g.trans_b = false, g.ldb = ldc, g.stride_b = stride_c;
    } else {  // dB (n, k) = dC^T (n, m) @ op(A) (m, k)
      g.m = n, g.n = k, g.k = m;
      g.trans_a = true, g.lda = ldc, g.stride_a = stride_c;
      g.trans_b = trans_a, g.ldb = lda, g.stride_b = stride_a;
    }
    return g;
  }
};

}  // namespace sg
