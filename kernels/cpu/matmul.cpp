// CPU GEMM through Eigen's Map: the row-major buffers are viewed in place (no
// copies), transposes are Eigen expressions, and Eigen picks its blocked,
// vectorized kernel. See kernels/gemm_shape.h for the conventions.
#include "kernels/cpu/matmul.h"

#include <Eigen/Core>

namespace sg::cpu {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstView = Eigen::Map<const RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using View = Eigen::Map<RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;

// C = alpha * op(A) op(B) + beta * C for one matrix of the batch.
template <typename OpA, typename OpB>
void gemm_one(View& c, const OpA& op_a, const OpB& op_b, float alpha, float beta) {
  // beta == 0 must ignore C entirely: it may hold uninitialized memory or NaN.
  if (beta == 0.0f) {
    c.noalias() = alpha * (op_a * op_b);
  } else {
    if (beta != 1.0f) c *= beta;
    c.noalias() += alpha * (op_a * op_b);
  }
}

void gemm_single(float* c_ptr, const float* a_ptr, const float* b_ptr, const GemmShape& s) {
  // Stored shapes: A is (m, k) or (k, m); B is (k, n) or (n, k).
  ConstView a(a_ptr, s.trans_a ? s.k : s.m, s.trans_a ? s.m : s.k, Eigen::OuterStride<>(s.lda));
  ConstView b(b_ptr, s.trans_b ? s.n : s.k, s.trans_b ? s.k : s.n, Eigen::OuterStride<>(s.ldb));
  View c(c_ptr, s.m, s.n, Eigen::OuterStride<>(s.ldc));
  if (!s.trans_a && !s.trans_b) gemm_one(c, a, b, s.alpha, s.beta);
  else if (!s.trans_a && s.trans_b) gemm_one(c, a, b.transpose(), s.alpha, s.beta);
  else if (s.trans_a && !s.trans_b) gemm_one(c, a.transpose(), b, s.alpha, s.beta);
  else gemm_one(c, a.transpose(), b.transpose(), s.alpha, s.beta);
}

}  // namespace

void matmul_forward(float* c, const float* a, const float* b, const GemmShape& shape) {
  if (shape.m == 0 || shape.n == 0) return;
  if (shape.k == 0) {  // an empty sum: C = beta * C
    for (int64_t i = 0; i < shape.batch; ++i) {
      View view(c + i * shape.stride_c, shape.m, shape.n, Eigen::OuterStride<>(shape.ldc));
      if (shape.beta == 0.0f) view.setZero(); else view *= shape.beta;
    }
    return;
  }
  // Many small matrices (attention heads): one thread per matrix, Eigen single-threaded.
  // Few large ones: let Eigen thread inside each GEMM.
  bool small = shape.m * shape.n * shape.k < (1 << 18);
  if (shape.batch > 1 && small) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < shape.batch; ++i) {
      gemm_single(c + i * shape.stride_c, a + i * shape.stride_a, b + i * shape.stride_b, shape);
    }
  } else {
    for (int64_t i = 0; i < shape.batch; ++i) {
      gemm_single(c + i * shape.stride_c, a + i * shape.stride_a, b + i * shape.stride_b, shape);
    }
  }
}

void matmul_backward(float* da, float* db, const float* dc, const float* a, const float* b,
                     const GemmShape& shape) {
  if (da) {
    GemmShape g = shape.grad_a_shape();
    if (!shape.trans_a) matmul_forward(da, dc, b, g);
    else matmul_forward(da, b, dc, g);
  }
  if (db) {
    GemmShape g = shape.grad_b_shape();
    if (!shape.trans_b) matmul_forward(db, a, dc, g);
    else matmul_forward(db, dc, a, g);
  }
}

void bias_add_forward(float* out, const float* bias, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
  }
}

void bias_add_backward(float* dbias, const float* dout, int64_t rows, int64_t cols) {
  // Column sums. Each thread owns a band of columns, so no two threads write
  // the same dbias element and no reduction buffer is needed.
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < cols; c0 += 64) {
    int64_t c1 = c0 + 64 < cols ? c0 + 64 : cols;
    float sums[64] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = dout + r * cols;
      for (int64_t c = c0; c < c1; ++c) sums[c - c0] += row[c];
    }
    for (int64_t c = c0; c < c1; ++c) dbias[c] += sums[c - c0];
  }
}

}  // namespace sg::cpu
