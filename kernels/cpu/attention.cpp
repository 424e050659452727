// CPU causal self-attention. One (batch, head) pair is independent of every
// other, so the loop over pairs is the parallel one. Within a pair the work
// is four small matrix products (T x HS by HS x T and back), done by Eigen's
// GEMM on views straight into qkv's interleaved layout (row stride 3C): the
// scalar loops this replaced were a sixth of a CPU training step. Inside
// the parallel loop Eigen's GEMM runs on one thread.
//
// The causal mask makes the upper triangle zero, so the products skip most of it:
// queries go in blocks of kCausalBlock rows, and the block ending at row r
// needs only keys 0 .. r (a staircase over the square: 10/16 of it at
// T = 256, 17/32 at T = 1024). The terms skipped were exact zeros (a
// probability of 0 times a value, or a score's gradient of 0), so every
// result is the full square's; each output row is still one product.
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

constexpr int64_t kCausalBlock = 64;  // query rows per product: smaller wastes less, but GEMMs want size

// Calls f(first, rows, keys) for each block of query rows: rows first ..
// first + rows - 1 see keys 0 .. keys - 1 (keys = first + rows).
template <typename F>
void for_each_query_block(int64_t T, F&& f) {
  for (int64_t first = 0; first < T; first += kCausalBlock) {
    const int64_t rows = std::min(kCausalBlock, T - first);
    f(first, rows, first + rows);
  }
}

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
      Strided<Real> o(out + b * T * C + h * HS, T, HS, Eigen::OuterStride<>(C));
      for_each_query_block(T, [&](int64_t first, int64_t rows, int64_t keys) {
        p.block(first, 0, rows, keys).noalias() = q.middleRows(first, rows) * k.topRows(keys).transpose();
        // Row t: softmax over keys s <= t (scaled), zero beyond (to T); in place.
        for (int64_t t = first; t < first + rows; ++t) {
          causal_softmax_row(p.data() + t * T, p.data() + t * T, t, T, scale);
        }
        o.middleRows(first, rows).noalias() = p.block(first, 0, rows, keys) * v.topRows(keys);
      });
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
        // Query blocks: dP over the visible keys, then dS (zero beyond the
        // diagonal, to T), then dQ.
        for_each_query_block(T, [&](int64_t first, int64_t rows, int64_t keys) {
          ds.block(first, 0, rows, keys).noalias() = dO.middleRows(first, rows) * v.topRows(keys).transpose();
          for (int64_t t = first; t < first + rows; ++t) {  // dP -> dS, row by row, in place
            causal_softmax_row_backward(ds.data() + t * T, p.data() + t * T, ds.data() + t * T, t, T, scale);
          }
          dq.middleRows(first, rows).noalias() += ds.block(first, 0, rows, keys) * k.topRows(keys);
        });
        // Key blocks: keys first .. first + n - 1 are seen by queries first .. T - 1.
        for_each_query_block(T, [&](int64_t first, int64_t n, int64_t) {
          const int64_t seen_by = T - first;
          dv.middleRows(first, n).noalias() += p.block(first, first, seen_by, n).transpose() * dO.bottomRows(seen_by);
          dk.middleRows(first, n).noalias() += ds.block(first, first, seen_by, n).transpose() * q.bottomRows(seen_by);
        });
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
