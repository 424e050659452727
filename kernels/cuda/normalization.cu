// CUDA LayerNorm and softmax: one warp per row. Lanes stride over the row's C
// elements, then combine with shuffles (kernels/cuda/warp.cuh). Rows are
// short (C <= a few thousand), so one warp per row keeps every lane busy
// without shared memory.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/cuda/normalization.h"
#include "kernels/cuda/warp.cuh"

namespace sg::cuda {
namespace {

constexpr float kLayerNormEps = 1e-5f;  // as kernels/cpu/normalization.h

// The rows below move N values per access: 16-byte vectors where the row
// length is a multiple of them and every buffer starts on a 16-byte boundary
// (then every row does), else single elements. Lane l takes units l, l + 32,
// ... of the row.

// One row of LayerNorm, by one warp: mean, then the variance of the centred
// values (two passes: it does not cancel), then y = (x - m) * s * w + b.
// A lane reads the same units it may have just written (add_layernorm
// below), so no other lane's writes are needed.
template <int N, typename T>
__device__ void layernorm_row(T* y, float* mean, float* rstd, const T* x, const T* weight, const T* bias, int64_t C,
                              int lane) {
  using V = Vec<T, N>;
  const V *xv = reinterpret_cast<const V*>(x), *wv = reinterpret_cast<const V*>(weight);
  const V* bv = reinterpret_cast<const V*>(bias);
  const int64_t units = C / N;
  float sum = 0.0f;
  for (int64_t u = lane; u < units; u += kWarp) {
    const V a = xv[u];
    for (int j = 0; j < N; ++j) sum += load(a.v[j]);
  }
  float m = warp_sum(sum) / float(C);
  float squares = 0.0f;
  for (int64_t u = lane; u < units; u += kWarp) {
    const V a = xv[u];
    for (int j = 0; j < N; ++j) {
      const float d = load(a.v[j]) - m;
      squares += d * d;
    }
  }
  float s = rsqrtf(warp_sum(squares) / float(C) + kLayerNormEps);
  for (int64_t u = lane; u < units; u += kWarp) {
    const V a = xv[u], w = wv[u], b = bv[u];
    V out;
    for (int j = 0; j < N; ++j) out.v[j] = store<T>((load(a.v[j]) - m) * s * load(w.v[j]) + load(b.v[j]));
    reinterpret_cast<V*>(y)[u] = out;
  }
  if (lane == 0) {
    *mean = m;
    *rstd = s;
  }
}

template <int N, typename T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* in, const T* weight, const T* bias,
                                         int64_t N_rows, int64_t C) {
  int64_t row = warp_row();
  if (row >= N_rows) return;
  layernorm_row<N>(out + row * C, mean + row, rstd + row, in + row * C, weight, bias, C, threadIdx.x % kWarp);
}

// The residual add and the LayerNorm after it, in one kernel: r = x + y is
// written (the residual stream goes on) and normalized while it is at hand
// (in cache), instead of being written by one kernel and read by the next.
template <int N, typename T>
__global__ void add_layernorm_forward_kernel(T* sum_out, T* out, float* mean, float* rstd, const T* x, const T* y,
                                             const T* weight, const T* bias, int64_t N_rows, int64_t C) {
  using V = Vec<T, N>;
  int64_t row = warp_row();
  int lane = threadIdx.x % kWarp;
  if (row >= N_rows) return;
  T* r = sum_out + row * C;
  const V *xv = reinterpret_cast<const V*>(x + row * C), *yv = reinterpret_cast<const V*>(y + row * C);
  for (int64_t u = lane; u < C / N; u += kWarp) {
    const V a = xv[u], b = yv[u];
    V sum;
    for (int j = 0; j < N; ++j) sum.v[j] = store<T>(load(a.v[j]) + load(b.v[j]));
    reinterpret_cast<V*>(r)[u] = sum;
  }
  layernorm_row<N>(out + row * C, mean + row, rstd + row, static_cast<const T*>(r), weight, bias, C, lane);
}

// One warp's row of a softmax of x * scale over its first `valid` entries
// of `width`; the rest of y is 0 (the causal mask). Plain softmax: valid =
// width, scale 1 (x * 1.0f is x exactly). N values per access, as above; a
// unit that straddles `valid` masks its elements one by one.
template <int N, typename T>
__device__ void softmax_row(T* y, const T* x, int64_t valid, int64_t width, float scale, int lane) {
  using V = Vec<T, N>;
  const V* xv = reinterpret_cast<const V*>(x);
  const int64_t valid_units = (valid + N - 1) / N;
  float max_value = -INFINITY;
  for (int64_t u = lane; u < valid_units; u += kWarp) {
    const V a = xv[u];
    for (int j = 0; j < N; ++j) {
      if (u * N + j < valid) max_value = fmaxf(max_value, load(a.v[j]) * scale);
    }
  }
  max_value = warp_max(max_value);
  float sum = 0.0f;
  for (int64_t u = lane; u < valid_units; u += kWarp) {
    const V a = xv[u];
    for (int j = 0; j < N; ++j) {
      if (u * N + j < valid) sum += expf(load(a.v[j]) * scale - max_value);
    }
  }
  const float inverse = 1.0f / warp_sum(sum);
  for (int64_t u = lane; u < width / N; u += kWarp) {
    V out;
    if (u < valid_units) {
      const V a = xv[u];
      for (int j = 0; j < N; ++j) {
        out.v[j] = store<T>(u * N + j < valid ? expf(load(a.v[j]) * scale - max_value) * inverse : 0.0f);
      }
    } else {
      for (int j = 0; j < N; ++j) out.v[j] = store<T>(0.0f);
    }
    reinterpret_cast<V*>(y)[u] = out;
  }
}

// The sum over the first `valid` entries of dy * y, on every lane: both
// softmax backwards need it.
template <int N, typename T>
__device__ float row_dot(const T* dy, const T* y, int64_t valid, int lane) {
  using V = Vec<T, N>;
  float dot = 0.0f;
  for (int64_t u = lane; u < (valid + N - 1) / N; u += kWarp) {
    const V a = reinterpret_cast<const V*>(dy)[u], b = reinterpret_cast<const V*>(y)[u];
    for (int j = 0; j < N; ++j) {
      if (u * N + j < valid) dot += load(a.v[j]) * load(b.v[j]);
    }
  }
  return warp_sum(dot);
}

template <int N, typename T>
__global__ void softmax_forward_kernel(T* out, const T* in, int64_t N_rows, int64_t C) {
  int64_t row = warp_row();
  if (row >= N_rows) return;
  softmax_row<N>(out + row * C, in + row * C, C, C, 1.0f, threadIdx.x % kWarp);
}

__global__ void softmax_backward_kernel(float* din, const float* out, const float* dout, int64_t N, int64_t C) {
  int64_t row = warp_row();
  int lane = threadIdx.x % kWarp;
  if (row >= N) return;
  const float* y = out + row * C;
  const float* dy = dout + row * C;
  const float dot = row_dot<1>(dy, y, C, lane);
  for (int64_t c = lane; c < C; c += kWarp) din[row * C + c] += y[c] * (dy[c] - dot);
}

// Attention's masked softmax, one warp per row (kernels/cpu/normalization.h):
// row t of each (T, T) block sees columns 0..t.
template <int N, typename T>
__global__ void causal_softmax_forward_kernel(T* out, const T* in, int64_t N_rows, int64_t T_, float scale) {
  int64_t row = warp_row();
  if (row >= N_rows) return;
  softmax_row<N>(out + row * T_, in + row * T_, row % T_ + 1, T_, scale, threadIdx.x % kWarp);
}

template <int N, typename T>
__global__ void causal_softmax_backward_kernel(T* din, const T* out, const T* dout, int64_t N_rows, int64_t T_,
                                               float scale) {
  using V = Vec<T, N>;
  int64_t row = warp_row();
  int lane = threadIdx.x % kWarp;
  if (row >= N_rows) return;
  const T* y = out + row * T_;
  const T* dy = dout + row * T_;
  // Past the diagonal y is 0, so dx is 0 and the dot gains nothing there:
  // only the first `valid` entries are read (about half of P and dP).
  const int64_t valid = row % T_ + 1, valid_units = (valid + N - 1) / N;
  const float dot = row_dot<N>(dy, y, valid, lane);
  for (int64_t u = lane; u < T_ / N; u += kWarp) {
    V out;
    if (u < valid_units) {
      const V a = reinterpret_cast<const V*>(y)[u], b = reinterpret_cast<const V*>(dy)[u];
      for (int j = 0; j < N; ++j) {
        out.v[j] = store<T>(u * N + j < valid ? scale * load(a.v[j]) * (load(b.v[j]) - dot) : 0.0f);
      }
    } else {
      for (int j = 0; j < N; ++j) out.v[j] = store<T>(0.0f);
    }
    reinterpret_cast<V*>(din + row * T_)[u] = out;
  }
}


}  // namespace

void layernorm_forward(void* out, float* mean, float* rstd, const void* in, const void* weight, const void* bias,
                       int64_t N, int64_t C, DType dtype, cudaStream_t stream) {
  if (N == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_units<T>(C, {out, in, weight, bias}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      layernorm_forward_kernel<kN><<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(
          static_cast<T*>(out), mean, rstd, static_cast<const T*>(in), static_cast<const T*>(weight),
          static_cast<const T*>(bias), N, C);
    });
  });
  SG_CHECK_LAUNCH();
}

void add_layernorm_forward(void* sum, void* out, float* mean, float* rstd, const void* x, const void* y,
                           const void* weight, const void* bias, int64_t N, int64_t C, DType dtype,
                           cudaStream_t stream) {
  if (N == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_units<T>(C, {sum, out, x, y, weight, bias}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      add_layernorm_forward_kernel<kN><<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(
          static_cast<T*>(sum), static_cast<T*>(out), mean, rstd, static_cast<const T*>(x),
          static_cast<const T*>(y), static_cast<const T*>(weight), static_cast<const T*>(bias), N, C);
    });
  });
  SG_CHECK_LAUNCH();
}


void softmax_forward(void* out, const void* in, int64_t N, int64_t C, DType dtype, cudaStream_t stream) {
  if (N == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_units<T>(C, {out, in}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      softmax_forward_kernel<kN><<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(
          static_cast<T*>(out), static_cast<const T*>(in), N, C);
    });
  });
  SG_CHECK_LAUNCH();
}

void softmax_backward(float* din, const float* out, const float* dout, int64_t N, int64_t C, cudaStream_t stream) {
  if (N == 0) return;
  softmax_backward_kernel<<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(din, out, dout, N, C);
  SG_CHECK_LAUNCH();
}

void causal_softmax_forward(void* out, const void* in, int64_t N, int64_t T, float scale, DType dtype,
                            cudaStream_t stream) {
  if (N == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using Ty = decltype(tag);
    with_units<Ty>(T, {out, in}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      causal_softmax_forward_kernel<kN><<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(
          static_cast<Ty*>(out), static_cast<const Ty*>(in), N, T, scale);
    });
  });
  SG_CHECK_LAUNCH();
}

void causal_softmax_backward(void* din, const void* out, const void* dout, int64_t N, int64_t T, float scale,
                             DType dtype, cudaStream_t stream) {
  if (N == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using Ty = decltype(tag);
    with_units<Ty>(T, {din, out, dout}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      causal_softmax_backward_kernel<kN><<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(
          static_cast<Ty*>(din), static_cast<const Ty*>(out), static_cast<const Ty*>(dout), N, T, scale);
    });
  });
  SG_CHECK_LAUNCH();
}

}  // namespace sg::cuda
