// CPU LayerNorm and softmax. Row statistics accumulate in double: rows are
// short enough that it costs little, and it makes these the accurate
// reference that the CUDA kernels are tested against.
#include "kernels/cpu/normalization.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sg::cpu {

void layernorm_forward(float* out, float* mean, float* rstd, const float* in, const float* weight,
                       const float* bias, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < N; ++row) {
    const float* x = in + row * C;
    double sum = 0.0;
    for (int64_t c = 0; c < C; ++c) sum += x[c];
    double m = sum / double(C);
    double squares = 0.0;
    for (int64_t c = 0; c < C; ++c) squares += (x[c] - m) * (x[c] - m);
    double s = 1.0 / std::sqrt(squares / double(C) + kLayerNormEps);
    float* y = out + row * C;
    for (int64_t c = 0; c < C; ++c) y[c] = float((x[c] - m) * s) * weight[c] + bias[c];
    mean[row] = float(m);
    rstd[row] = float(s);
  }
}

void layernorm_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C) {
#pragma omp parallel
  {
    // Each thread sums dweight/dbias over its rows privately, then adds once.
    std::vector<float> local_dweight(size_t(C), 0.0f), local_dbias(size_t(C), 0.0f);
#pragma omp for schedule(static)
    for (int64_t row = 0; row < N; ++row) {
      const float* x = in + row * C;
      const float* dy = dout + row * C;
      float m = mean[row], s = rstd[row];
      double mean_dxhat = 0.0, mean_dxhat_xhat = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        float xhat = (x[c] - m) * s;
        float dxhat = dy[c] * weight[c];
        mean_dxhat += dxhat;
        mean_dxhat_xhat += dxhat * xhat;
        local_dweight[size_t(c)] += dy[c] * xhat;
        local_dbias[size_t(c)] += dy[c];
      }
      mean_dxhat /= double(C);
      mean_dxhat_xhat /= double(C);
      float* dx = din + row * C;
      for (int64_t c = 0; c < C; ++c) {
        float xhat = (x[c] - m) * s;
        float dxhat = dy[c] * weight[c];
        dx[c] += s * float(dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
      }
    }
#pragma omp critical
    for (int64_t c = 0; c < C; ++c) {
      dweight[c] += local_dweight[size_t(c)];
      dbias[c] += local_dbias[size_t(c)];
    }
  }
}

void softmax_forward(float* out, const float* in, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < N; ++row) {
    const float* x = in + row * C;
    float* y = out + row * C;
    float max_value = -INFINITY;
    for (int64_t c = 0; c < C; ++c) max_value = std::max(max_value, x[c]);
    double sum = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      y[c] = std::exp(x[c] - max_value);
      sum += y[c];
    }
    float inverse = float(1.0 / sum);
    for (int64_t c = 0; c < C; ++c) y[c] *= inverse;
  }
}

void softmax_backward(float* din, const float* out, const float* dout, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < N; ++row) {
    const float* y = out + row * C;
    const float* dy = dout + row * C;
    double dot = 0.0;
    for (int64_t c = 0; c < C; ++c) dot += double(dy[c]) * y[c];
    float* dx = din + row * C;
    for (int64_t c = 0; c < C; ++c) dx[c] += y[c] * (dy[c] - float(dot));
  }
}

}  // namespace sg::cpu
