#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <cmath>

namespace sg::cpu {

template <typename T>
void sum_forward(T* out, const T* in, int64_t n) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) total += in[i];
  *out = T(total);
}

template <typename T>
void max_forward(T* out, const T* in, int64_t n) {
  T best = -INFINITY;
#pragma omp parallel for reduction(max : best) schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) best = std::max(best, in[i]);
  *out = best;
}

template <typename T>
void squared_norm_forward(T* out, const T* in, int64_t n) {
  double total = 0.0;
#pragma omp parallel for reduction(+ : total) schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) total += double(in[i]) * in[i];
  *out = T(total);
}

#define SG_INSTANTIATE(T) \
  template void sum_forward<T>(T*, const T*, int64_t); \
  template void max_forward<T>(T*, const T*, int64_t); \
  template void squared_norm_forward<T>(T*, const T*, int64_t);
SG_INSTANTIATE(float)
SG_INSTANTIATE(double)
#undef SG_INSTANTIATE

}  // namespace sg::cpu
