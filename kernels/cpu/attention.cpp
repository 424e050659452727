// CPU causal self-attention. One (batch, head) pair is independent of every
// other, so the loops over it are the parallel ones; within a pair, rows of
// the backward write disjoint slices of dqkv only for dQ, so dK/dV are summed
// per pair in sequence (no atomics).
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sg::cpu {

template <typename Real>  // float or double
void attention_forward(Real* out, Real* att, const Real* qkv, int64_t B, int64_t T, int64_t C,
                       int64_t NH) {
  const int64_t HS = C / NH;
  const Real scale = 1.0f / std::sqrt(Real(HS));
#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const Real* q = qkv + (b * T + t) * 3 * C + h * HS;
        Real* p = att + ((b * NH + h) * T + t) * T;
        // Scores against keys s <= t, tracking the max for a stable softmax.
        Real max_score = -INFINITY;
        for (int64_t s = 0; s <= t; ++s) {
          const Real* k = qkv + (b * T + s) * 3 * C + C + h * HS;
          Real dot = 0.0f;
          for (int64_t i = 0; i < HS; ++i) dot += q[i] * k[i];
          p[s] = dot * scale;
          max_score = std::max(max_score, p[s]);
        }
        Real sum = 0.0f;
        for (int64_t s = 0; s <= t; ++s) {
          p[s] = std::exp(p[s] - max_score);
          sum += p[s];
        }
        Real inverse = 1.0f / sum;
        for (int64_t s = 0; s <= t; ++s) p[s] *= inverse;
        for (int64_t s = t + 1; s < T; ++s) p[s] = 0.0f;
        // Weighted sum of values.
        Real* o = out + (b * T + t) * C + h * HS;
        for (int64_t i = 0; i < HS; ++i) o[i] = 0.0f;
        for (int64_t s = 0; s <= t; ++s) {
          const Real* v = qkv + (b * T + s) * 3 * C + 2 * C + h * HS;
          for (int64_t i = 0; i < HS; ++i) o[i] += p[s] * v[i];
        }
      }
    }
  }
}

template <typename Real>  // float or double
void attention_backward(Real* dqkv, const Real* dout, const Real* qkv, const Real* att, int64_t B,
                        int64_t T, int64_t C, int64_t NH) {
  const int64_t HS = C / NH;
  const Real scale = 1.0f / std::sqrt(Real(HS));
#pragma omp parallel
  {
    std::vector<Real> dp(static_cast<size_t>(T));  // one row of dP, then dS, reused per query
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < NH; ++h) {
        for (int64_t t = 0; t < T; ++t) {
          const Real* q = qkv + (b * T + t) * 3 * C + h * HS;
          const Real* p = att + ((b * NH + h) * T + t) * T;
          const Real* dO = dout + (b * T + t) * C + h * HS;
          Real* dq = dqkv + (b * T + t) * 3 * C + h * HS;
          // dP[s] = dO . v_s, and dV[s] += P[s] * dO.
          Real dot_dp_p = 0.0f;
          for (int64_t s = 0; s <= t; ++s) {
            const Real* v = qkv + (b * T + s) * 3 * C + 2 * C + h * HS;
            Real* dv = dqkv + (b * T + s) * 3 * C + 2 * C + h * HS;
            Real d = 0.0f;
            for (int64_t i = 0; i < HS; ++i) {
              d += dO[i] * v[i];
              dv[i] += p[s] * dO[i];
            }
            dp[size_t(s)] = d;
            dot_dp_p += d * p[s];
          }
          // dS = P * (dP - <dP, P>), then dQ and dK with the 1/sqrt(HS) scale.
          for (int64_t s = 0; s <= t; ++s) {
            Real ds = p[s] * (dp[size_t(s)] - dot_dp_p) * scale;
            const Real* k = qkv + (b * T + s) * 3 * C + C + h * HS;
            Real* dk = dqkv + (b * T + s) * 3 * C + C + h * HS;
            for (int64_t i = 0; i < HS; ++i) {
              dq[i] += ds * k[i];
              dk[i] += ds * q[i];
            }
          }
        }
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
