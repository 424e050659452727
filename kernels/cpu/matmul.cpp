// CPU GEMM: f32 through shardgrad's own AVX-512 kernel (kernels/cpu/sgemm.h)
// where the build has it, else (and for f64) through Eigen's Map: the
// row-major buffers are viewed in place (no copies), transposes are Eigen
// expressions, and Eigen picks its blocked, vectorized kernel. See
// kernels/gemm_shape.h for the conventions.
#include "kernels/cpu/matmul.h"

#include <Eigen/Core>

#include <type_traits>

#include "kernels/cpu/sgemm.h"

namespace sg::cpu {
namespace {

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstView = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename T>
using View = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

// C = alpha * op(A) op(B) + beta * C for one matrix of the batch.
template <typename T, typename OpA, typename OpB>
void gemm_one(View<T>& c, const OpA& op_a, const OpB& op_b, T alpha, T beta) {
  // beta == 0 must ignore C entirely: it may hold uninitialized memory or NaN.
  if (beta == T(0)) {
    c.noalias() = alpha * (op_a * op_b);
  } else {
    // The product is summed whole and then added to C, as cuBLAS's epilogue
    // does, not added into C one panel of K at a time as Eigen's += would:
    // a gradient accumulated here has the bits of a fresh product and an add.
    const RowMatrix<T> product = alpha * (op_a * op_b);
    if (beta != T(1)) c *= beta;
    c += product;
  }
}

template <typename T>
void gemm_single(T* c_ptr, const T* a_ptr, const T* b_ptr, const GemmShape& s) {
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_suits(s.n)) {  // f32 on AVX-512: kernels/cpu/sgemm.h
      // Element (i, p) of op(A) and (p, j) of op(B), as row and column strides.
      const int64_t a_row = s.trans_a ? 1 : s.lda, a_col = s.trans_a ? s.lda : 1;
      const int64_t b_row = s.trans_b ? 1 : s.ldb, b_col = s.trans_b ? s.ldb : 1;
      if (s.beta == 0.0f) {
        sgemm(s.m, s.n, s.k, s.alpha, a_ptr, a_row, a_col, b_ptr, b_row, b_col, c_ptr, s.ldc);
        return;
      }
      // A fresh product, then the add (as gemm_one below, and cuBLAS).
      RowMatrix<float> product(s.m, s.n);
      sgemm(s.m, s.n, s.k, s.alpha, a_ptr, a_row, a_col, b_ptr, b_row, b_col, product.data(), s.n);
      View<float> c(c_ptr, s.m, s.n, Eigen::OuterStride<>(s.ldc));
      if (s.beta != 1.0f) c *= s.beta;
      c += product;
      return;
    }
  }
  // Stored shapes: A is (m, k) or (k, m); B is (k, n) or (n, k).
  ConstView<T> a(a_ptr, s.trans_a ? s.k : s.m, s.trans_a ? s.m : s.k, Eigen::OuterStride<>(s.lda));
  ConstView<T> b(b_ptr, s.trans_b ? s.n : s.k, s.trans_b ? s.k : s.n, Eigen::OuterStride<>(s.ldb));
  View<T> c(c_ptr, s.m, s.n, Eigen::OuterStride<>(s.ldc));
  const T alpha = T(s.alpha), beta = T(s.beta);
  if (!s.trans_a && !s.trans_b) gemm_one(c, a, b, alpha, beta);
  else if (!s.trans_a && s.trans_b) gemm_one(c, a, b.transpose(), alpha, beta);
  else if (s.trans_a && !s.trans_b) gemm_one(c, a.transpose(), b, alpha, beta);
  else gemm_one(c, a.transpose(), b.transpose(), alpha, beta);
}

}  // namespace

template <typename T>
void matmul_forward(T* c, const T* a, const T* b, const GemmShape& shape) {
  if (shape.m == 0 || shape.n == 0) return;
  if (shape.k == 0) {  // an empty sum: C = beta * C
    for (int64_t i = 0; i < shape.batch; ++i) {
      View<T> view(c + i * shape.stride_c, shape.m, shape.n, Eigen::OuterStride<>(shape.ldc));
      if (shape.beta == 0.0f) view.setZero(); else view *= T(shape.beta);
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

template <typename T>
void matmul_backward(T* da, T* db, const T* dc, const T* a, const T* b, const GemmShape& shape) {
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

template <typename T>
void bias_add_forward(T* out, const T* bias, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    T* row = out + r * cols;
    for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
  }
}

template <typename T>
void bias_add_backward(T* dbias, const T* dout, int64_t rows, int64_t cols) {
  // Column sums. Each thread owns a band of columns, so no two threads write
  // the same dbias element and no reduction buffer is needed.
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < cols; c0 += 64) {
    int64_t c1 = c0 + 64 < cols ? c0 + 64 : cols;
    T sums[64] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = dout + r * cols;
      for (int64_t c = c0; c < c1; ++c) sums[c - c0] += row[c];
    }
    for (int64_t c = c0; c < c1; ++c) dbias[c] += sums[c - c0];
  }
}

#define SG_INSTANTIATE(T)                                                               \
  template void matmul_forward<T>(T*, const T*, const T*, const GemmShape&);            \
  template void matmul_backward<T>(T*, T*, const T*, const T*, const T*, const GemmShape&); \
  template void bias_add_forward<T>(T*, const T*, int64_t, int64_t);                    \
  template void bias_add_backward<T>(T*, const T*, int64_t, int64_t);
SG_INSTANTIATE(float)
SG_INSTANTIATE(double)
#undef SG_INSTANTIATE

}  // namespace sg::cpu
