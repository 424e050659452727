#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace sg::cpu {

template <typename T>
void embedding_forward(T* out, const T* table, const int32_t* ids, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    std::memcpy(out + n * C, table + int64_t(ids[n]) * C, size_t(C) * sizeof(T));
  }
}

template <typename T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int64_t N, int64_t C) {
  // Threads own bands of channels, so two rows with the same id never race.
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    int64_t c1 = std::min(c0 + 16, C);
    for (int64_t n = 0; n < N; ++n) {
      T* row = dtable + int64_t(ids[n]) * C;
      const T* d = dout + n * C;
      for (int64_t c = c0; c < c1; ++c) row[c] += d[c];
    }
  }
}

template <typename T>
void cross_entropy_forward(T* losses, T* lse, const T* logits, const int32_t* targets,
                           int64_t N, int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* x = logits + n * V;
    T max_value = -INFINITY;
    for (int64_t j = 0; j < V; ++j) max_value = std::max(max_value, x[j]);
    double sum = 0.0;
    for (int64_t j = 0; j < V; ++j) sum += std::exp(double(x[j] - max_value));
    double log_sum_exp = double(max_value) + std::log(sum);
    lse[n] = T(log_sum_exp);
    losses[n] = targets[n] < 0 ? 0.0f : T(log_sum_exp - double(x[targets[n]]));
  }
}

template <typename T>
void cross_entropy_backward(T* dlogits, const T* dlosses, const T* logits, const T* lse,
                            const int32_t* targets, int64_t N, int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* x = logits + n * V;
    T* dx = dlogits + n * V;
    if (targets[n] < 0) {
      for (int64_t j = 0; j < V; ++j) dx[j] = T(0);
      continue;
    }
    T d = dlosses[n];
    for (int64_t j = 0; j < V; ++j) dx[j] = d * std::exp(x[j] - lse[n]);
    dx[targets[n]] -= d;
  }
}

#define SG_INSTANTIATE(T) \
  template void embedding_forward<T>(T*, const T*, const int32_t*, int64_t, int64_t); \
  template void embedding_backward<T>(T*, const T*, const int32_t*, int64_t, int64_t); \
  template void cross_entropy_forward<T>(T*, T*, const T*, const int32_t*, int64_t, int64_t); \
  template void cross_entropy_backward<T>(T*, const T*, const T*, const T*, const int32_t*, int64_t, int64_t);
SG_INSTANTIATE(float)
SG_INSTANTIATE(double)
#undef SG_INSTANTIATE

}  // namespace sg::cpu
