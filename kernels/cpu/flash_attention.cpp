// Scalar loops, one (batch, head) pair per parallel iteration: the keys and
// values a pair writes (dK, dV) belong to it alone, so no two threads write
// the same element.
#include "kernels/cpu/flash_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sg::cpu {
namespace {

template <typename Real>
Real dot(const Real* a, const Real* b, int64_t n) {
  Real sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

template <typename Real>
void flash_attention_forward(Real* out, Real* lse, const Real* qkv, int64_t B, int64_t T, int64_t C, int64_t NH) {
  const int64_t HS = C / NH;
  const Real scale = Real(1) / std::sqrt(Real(HS));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      std::vector<Real> o(static_cast<size_t>(HS));
      for (int64_t t = 0; t < T; ++t) {
        const Real* q = qkv + (b * T + t) * 3 * C + h * HS;
        Real m = -INFINITY, l = 0;
        std::fill(o.begin(), o.end(), Real(0));
        for (int64_t s = 0; s <= t; ++s) {
          const Real* k = qkv + (b * T + s) * 3 * C + C + h * HS;
          const Real* v = k + C;
          const Real score = dot(q, k, HS) * scale;
          const Real m_new = std::max(m, score);
          const Real correction = std::exp(m - m_new), p = std::exp(score - m_new);
          l = l * correction + p;
          for (int64_t i = 0; i < HS; ++i) o[size_t(i)] = o[size_t(i)] * correction + p * v[i];
          m = m_new;
        }
        Real* row = out + (b * T + t) * C + h * HS;
        for (int64_t i = 0; i < HS; ++i) row[i] = o[size_t(i)] / l;
        lse[(b * NH + h) * T + t] = m + std::log(l);
      }
    }
  }
}

template <typename Real>
void flash_attention_backward(Real* dqkv, const Real* dout, const Real* qkv, const Real* out, const Real* lse,
                              int64_t B, int64_t T, int64_t C, int64_t NH) {
  const int64_t HS = C / NH;
  const Real scale = Real(1) / std::sqrt(Real(HS));
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < NH; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const Real* q = qkv + (b * T + t) * 3 * C + h * HS;
        const Real* dO = dout + (b * T + t) * C + h * HS;
        const Real D = dot(dO, out + (b * T + t) * C + h * HS, HS);
        const Real row_lse = lse[(b * NH + h) * T + t];
        Real* dq = dqkv + (b * T + t) * 3 * C + h * HS;
        for (int64_t s = 0; s <= t; ++s) {
          const Real* k = qkv + (b * T + s) * 3 * C + C + h * HS;
          const Real* v = k + C;
          Real* dk = dqkv + (b * T + s) * 3 * C + C + h * HS;
          Real* dv = dk + C;
          const Real p = std::exp(dot(q, k, HS) * scale - row_lse);
          const Real ds = p * (dot(dO, v, HS) - D) * scale;
          for (int64_t i = 0; i < HS; ++i) {
            dv[i] += p * dO[i];
            dq[i] += ds * k[i];
            dk[i] += ds * q[i];
          }
        }
      }
    }
  }
}

template void flash_attention_forward<float>(float*, float*, const float*, int64_t, int64_t, int64_t, int64_t);
template void flash_attention_forward<double>(double*, double*, const double*, int64_t, int64_t, int64_t, int64_t);
template void flash_attention_backward<float>(float*, const float*, const float*, const float*, const float*, int64_t,
                                              int64_t, int64_t, int64_t);
template void flash_attention_backward<double>(double*, const double*, const double*, const double*, const double*,
                                               int64_t, int64_t, int64_t, int64_t);

}  // namespace sg::cpu
