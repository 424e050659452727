// Internal to kernels/cpu: attention's masked softmax for one row of scores,
// forward and backward, shared by the naive attention (attention.cpp, in
// place in its (T, T) matrix) and the causal_softmax op (normalization.cpp).
// Row t belongs to query t: keys s <= t are visible, s > t are masked.
// Sums run in Real, as the naive attention's always did (its results, and
// the CPU training runs built on them, stay bit for bit the same).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace sg::cpu {

// y_s = softmax over s <= t of scale * x_s, 0 for s > t. y may be x.
template <typename Real>
inline void causal_softmax_row(Real* y, const Real* x, int64_t t, int64_t T, Real scale) {
  Real max_score = -INFINITY;
  for (int64_t s = 0; s <= t; ++s) max_score = std::max(max_score, x[s] * scale);
  Real sum = 0;
  for (int64_t s = 0; s <= t; ++s) {
    y[s] = std::exp(x[s] * scale - max_score);
    sum += y[s];
  }
  const Real inverse = Real(1) / sum;
  for (int64_t s = 0; s <= t; ++s) y[s] *= inverse;
  for (int64_t s = t + 1; s < T; ++s) y[s] = 0;
}

// dx_s = y_s (dy_s - sum_{s' <= t} dy_s' y_s') scale for s <= t, 0 beyond:
// the softmax's Jacobian applied to dy, times the scale the scores had.
// Written, not added; dx may be dy.
template <typename Real>
inline void causal_softmax_row_backward(Real* dx, const Real* y, const Real* dy, int64_t t, int64_t T, Real scale) {
  Real dot = 0;
  for (int64_t s = 0; s <= t; ++s) dot += dy[s] * y[s];
  for (int64_t s = 0; s <= t; ++s) dx[s] = y[s] * (dy[s] - dot) * scale;
  for (int64_t s = t + 1; s < T; ++s) dx[s] = 0;
}

}  // namespace sg::cpu
