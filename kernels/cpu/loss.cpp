#include "kernels/cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace sg::cpu {

void embedding_forward(float* out, const float* table, const int32_t* ids, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    std::memcpy(out + n * C, table + int64_t(ids[n]) * C, size_t(C) * sizeof(float));
  }
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C) {
  // Threads own bands of channels, so two rows with the same id never race.
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < C; c0 += 16) {
    int64_t c1 = std::min(c0 + 16, C);
    for (int64_t n = 0; n < N; ++n) {
      float* row = dtable + int64_t(ids[n]) * C;
      const float* d = dout + n * C;
      for (int64_t c = c0; c < c1; ++c) row[c] += d[c];
    }
  }
}

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets,
                           int64_t N, int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* x = logits + n * V;
    float max_value = -INFINITY;
    for (int64_t j = 0; j < V; ++j) max_value = std::max(max_value, x[j]);
    double sum = 0.0;
    for (int64_t j = 0; j < V; ++j) sum += std::exp(double(x[j] - max_value));
    double log_sum_exp = double(max_value) + std::log(sum);
    lse[n] = float(log_sum_exp);
    losses[n] = targets[n] < 0 ? 0.0f : float(log_sum_exp - double(x[targets[n]]));
  }
}

void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    const float* x = logits + n * V;
    float* dx = dlogits + n * V;
    float d = dlosses[n];
    for (int64_t j = 0; j < V; ++j) dx[j] += d * std::exp(x[j] - lse[n]);
    dx[targets[n]] -= d;
  }
}

}  // namespace sg::cpu
