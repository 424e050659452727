// CPU LayerNorm and softmax. Row statistics accumulate in double: rows are
// short enough that it costs little, and it makes these the accurate
// reference that the CUDA kernels are tested against.
#include "kernels/cpu/normalization.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/causal_softmax_row.h"

namespace sg::cpu {

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* weight,
                       const T* bias, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < N; ++row) {
    const T* x = in + row * C;
    double sum = 0.0;
    for (int64_t c = 0; c < C; ++c) sum += x[c];
    double m = sum / double(C);
    double squares = 0.0;
    for (int64_t c = 0; c < C; ++c) squares += (x[c] - m) * (x[c] - m);
    double s = 1.0 / std::sqrt(squares / double(C) + kLayerNormEps);
    T* y = out + row * C;
    for (int64_t c = 0; c < C; ++c) y[c] = T((x[c] - m) * s) * weight[c] + bias[c];
    mean[row] = T(m);
    rstd[row] = T(s);
  }
}

// dweight and dbias sum over rows. Blocks of kRowsPerPartial rows each sum
// into their own partial, and the partials are added in block order: the
// same bits on any number of threads (kernels/cpu/fixed_chunks.h says why).
template <typename T>
void layernorm_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in,
                        const T* weight, const T* mean, const T* rstd, int64_t N, int64_t C) {
  constexpr int64_t kRowsPerPartial = 32;
  const int64_t blocks = (N + kRowsPerPartial - 1) / kRowsPerPartial;
  std::vector<T> partials(size_t(blocks * 2 * C), T(0));  // per block: dweight's C, then dbias's C
#pragma omp parallel for schedule(static)
  for (int64_t block = 0; block < blocks; ++block) {
    T* block_dweight = partials.data() + block * 2 * C;
    T* block_dbias = block_dweight + C;
    for (int64_t row = block * kRowsPerPartial; row < std::min(N, (block + 1) * kRowsPerPartial); ++row) {
      const T* x = in + row * C;
      const T* dy = dout + row * C;
      T m = mean[row], s = rstd[row];
      double mean_dxhat = 0.0, mean_dxhat_xhat = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        T xhat = (x[c] - m) * s;
        T dxhat = dy[c] * weight[c];
        mean_dxhat += dxhat;
        mean_dxhat_xhat += dxhat * xhat;
        block_dweight[c] += dy[c] * xhat;
        block_dbias[c] += dy[c];
      }
      mean_dxhat /= double(C);
      mean_dxhat_xhat /= double(C);
      T* dx = din + row * C;
      for (int64_t c = 0; c < C; ++c) {
        T xhat = (x[c] - m) * s;
        T dxhat = dy[c] * weight[c];
        dx[c] += s * T(dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
      }
    }
  }
  for (int64_t block = 0; block < blocks; ++block) {
    const T* block_dweight = partials.data() + block * 2 * C;
    for (int64_t c = 0; c < C; ++c) {
      dweight[c] += block_dweight[c];
      dbias[c] += block_dweight[C + c];
    }
  }
}

template <typename T>
void softmax_forward(T* out, const T* in, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < N; ++row) {
    const T* x = in + row * C;
    T* y = out + row * C;
    T max_value = -INFINITY;
    for (int64_t c = 0; c < C; ++c) max_value = std::max(max_value, x[c]);
    double sum = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      y[c] = std::exp(x[c] - max_value);
      sum += y[c];
    }
    T inverse = T(1.0 / sum);
    for (int64_t c = 0; c < C; ++c) y[c] *= inverse;
  }
}

template <typename T>
void softmax_backward(T* din, const T* out, const T* dout, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < N; ++row) {
    const T* y = out + row * C;
    const T* dy = dout + row * C;
    double dot = 0.0;
    for (int64_t c = 0; c < C; ++c) dot += double(dy[c]) * y[c];
    T* dx = din + row * C;
    for (int64_t c = 0; c < C; ++c) dx[c] += y[c] * (dy[c] - T(dot));
  }
}

template <typename T>
void causal_softmax_forward(T* out, const T* in, int64_t N, int64_t T_, T scale) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < N; ++row) causal_softmax_row(out + row * T_, in + row * T_, row % T_, T_, scale);
}

template <typename T>
void causal_softmax_backward(T* din, const T* out, const T* dout, int64_t N, int64_t T_, T scale) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < N; ++row) {
    causal_softmax_row_backward(din + row * T_, out + row * T_, dout + row * T_, row % T_, T_, scale);
  }
}

#define SG_INSTANTIATE(T) \
  template void causal_softmax_forward<T>(T*, const T*, int64_t, int64_t, T); \
  template void causal_softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t, T); \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t); \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t, int64_t); \
  template void softmax_forward<T>(T*, const T*, int64_t, int64_t); \
  template void softmax_backward<T>(T*, const T*, const T*, int64_t, int64_t);
SG_INSTANTIATE(float)
SG_INSTANTIATE(double)
#undef SG_INSTANTIATE

}  // namespace sg::cpu
