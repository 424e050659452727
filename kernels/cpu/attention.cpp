// CPU causal self-attention. One (batch, head) pair is independent of every
// other, so the loop over pairs is the parallel one. Within a pair the work
// is four small matrix products (T x HS by HS x T and back), done by Eigen's
// GEMM on views straight into qkv's interleaved layout (row stride 3C): the
// scalar loops this replaced were a sixth of a CPU training step. The
// products run over the full T x T square and the causal mask zeroes the
// upper triangle (half the flops wasted, but GEMM runs ~10x faster than the
// loops). Inside the parallel loop Eigen's GEMM runs on one thread.
#include "kernels/cpu/attention.h"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/causal_softmax_row.h"

namespace sg::cpu {
namespace {

template <typename Real>
using Matrix = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename Real>
using Strided = Eigen::Map<Matrix<Real>, 0, Eigen::OuterStride<>>;
template <typename Real>
using ConstStrided = Eigen::Map<const Matrix<Real>, 0, Eigen::OuterStride<>>;

}  // namespace

template <typename Real>  // float or double
void attention_forward(Real* out, Real* att, const Real* qkv, int64_t B, int64_t T, int64_t C,
                       int64_t NH) {
  const int64_t HS = C / NH;
  const Real scale = Real(1) / std::sqrt(Real(HS));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      const Real* base = qkv + b * T * 3 * C + h * HS;
      ConstStrided<Real> q(base, T, HS, Eigen::OuterStride<>(3 * C));
      ConstStrided<Real> k(base + C, T, HS, Eigen::OuterStride<>(3 * C));
      ConstStrided<Real> v(base + 2 * C, T, HS, Eigen::OuterStride<>(3 * C));
      Eigen::Map<Matrix<Real>> p(att + (b * NH + h) * T * T, T, T);
      p.noalias() = q * k.transpose();
      // Row t: softmax over keys s <= t (scaled), zero beyond; in place.
      for (int64_t t = 0; t < T; ++t) causal_softmax_row(p.data() + t * T, p.data() + t * T, t, T, scale);
      Strided<Real> o(out + b * T * C + h * HS, T, HS, Eigen::OuterStride<>(C));
      o.noalias() = p * v;
    }
  }
}

// With P the probabilities and dO the output's gradient, per (batch, head):
//   dV = P^T dO     dP = dO V^T     dS = P * (dP - rowsum(dP * P))     (* elementwise)
//   dQ = dS K / sqrt(HS)            dK = dS^T Q / sqrt(HS)
// (dS is zero above the diagonal, where P is.) The gradients add into dqkv.
template <typename Real>  // float or double
void attention_backward(Real* dqkv, const Real* dout, const Real* qkv, const Real* att, int64_t B,
                        int64_t T, int64_t C, int64_t NH) {
  const int64_t HS = C / NH;
  const Real scale = Real(1) / std::sqrt(Real(HS));
#pragma omp parallel
  {
    Matrix<Real> ds(T, T);  // dP, then dS, reused per pair
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < NH; ++h) {
        const Real* base = qkv + b * T * 3 * C + h * HS;
        Real* dbase = dqkv + b * T * 3 * C + h * HS;
        const Eigen::OuterStride<> stride(3 * C);
        ConstStrided<Real> q(base, T, HS, stride), k(base + C, T, HS, stride), v(base + 2 * C, T, HS, stride);
        Strided<Real> dq(dbase, T, HS, stride), dk(dbase + C, T, HS, stride), dv(dbase + 2 * C, T, HS, stride);
        Eigen::Map<const Matrix<Real>> p(att + (b * NH + h) * T * T, T, T);
        ConstStrided<Real> dO(dout + b * T * C + h * HS, T, HS, Eigen::OuterStride<>(C));
        dv.noalias() += p.transpose() * dO;
        ds.noalias() = dO * v.transpose();
        for (int64_t t = 0; t < T; ++t) {  // dP -> dS, row by row, in place
          causal_softmax_row_backward(ds.data() + t * T, p.data() + t * T, ds.data() + t * T, t, T, scale);
        }
        dq.noalias() += ds * k;
        dk.noalias() += ds.transpose() * q;
      }
    }
  }
}

#define SG_INSTANTIATE(Real)                                                                      \
  template void attention_forward<Real>(Real*, Real*, const Real*, int64_t, int64_t, int64_t, int64_t); \
  template void attention_backward<Real>(Real*, const Real*, const Real*, const Real*, int64_t, int64_t, int64_t, int64_t);
SG_INSTANTIATE(float)
SG_INSTANTIATE(double)
#undef SG_INSTANTIATE

}  // namespace sg::cpu
