#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/fixed_chunks.h"

namespace sg::cpu {

// Sums take fixed chunks (kernels/cpu/fixed_chunks.h): the same bits on any
// number of threads. A max needs no such care: it rounds nothing.
constexpr int64_t kChunk = int64_t{1} << 15;

template <typename T>
void sum_forward(T* out, const T* in, int64_t n) {
  *out = T(sum_in_fixed_chunks<double>(n, kChunk, [&](int64_t begin, int64_t end) {
    double total = 0.0;
    for (int64_t i = begin; i < end; ++i) total += in[i];
    return total;
  }));
}

template <typename T>
void max_forward(T* out, const T* in, int64_t n) {
  T best = -INFINITY;
#pragma omp parallel for reduction(max : best) schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) best = std::max(best, in[i]);
  *out = best;
}

template <typename T>
double squared_sum(const T* in, int64_t n) {
  return sum_in_fixed_chunks<double>(n, kChunk, [&](int64_t begin, int64_t end) {
    double total = 0.0;
    for (int64_t i = begin; i < end; ++i) total += double(in[i]) * in[i];
    return total;
  });
}

template <typename T>
void squared_norm_forward(T* out, const T* in, int64_t n) {
  *out = T(squared_sum(in, n));
}

#define SG_INSTANTIATE(T) \
  template void sum_forward<T>(T*, const T*, int64_t); \
  template void max_forward<T>(T*, const T*, int64_t); \
  template void squared_norm_forward<T>(T*, const T*, int64_t); \
  template double squared_sum<T>(const T*, int64_t);
SG_INSTANTIATE(float)
SG_INSTANTIATE(double)
#undef SG_INSTANTIATE

}  // namespace sg::cpu
