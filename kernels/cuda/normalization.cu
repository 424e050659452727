// CUDA LayerNorm and softmax: one warp per row. Lanes stride over the row's C
// elements, then combine with shuffles (kernels/cuda/warp.cuh). Rows are
// short (C <= a few thousand), so one warp per row keeps every lane busy
// without shared memory.
#include "kernels/cuda/column_sums.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/cuda/normalization.h"
#include "kernels/cuda/warp.cuh"
#include "kernels/env_switch.h"

namespace sg::cuda {
namespace {

constexpr float kLayerNormEps = 1e-5f;  // as kernels/cpu/normalization.h

__device__ __forceinline__ int64_t warp_row() {
  return (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
}

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

// One element of LayerNorm's dx, given its row's means of dxhat and of
// dxhat * xhat (dxhat = dy * weight): the formula of
// kernels/cpu/normalization.h, shared by the two backward kernels below.
__device__ __forceinline__ float dx_of(float xhat, float dxhat, float rstd, float mean_dxhat,
                                       float mean_dxhat_xhat) {
  return rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
}

template <int N, typename T>
__global__ void layernorm_backward_input_kernel(T* din, const T* dout, const T* in, const T* weight,
                                                const float* mean, const float* rstd, const T* add_to_din,
                                                int64_t N_rows, int64_t C) {
  using V = Vec<T, N>;
  int64_t row = warp_row();
  int lane = threadIdx.x % kWarp;
  if (row >= N_rows) return;
  const V *x = reinterpret_cast<const V*>(in + row * C), *dy = reinterpret_cast<const V*>(dout + row * C);
  const V* w = reinterpret_cast<const V*>(weight);
  const int64_t units = C / N;
  float m = mean[row], s = rstd[row];
  float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
  for (int64_t u = lane; u < units; u += kWarp) {
    const V a = x[u], d = dy[u], wu = w[u];
    for (int j = 0; j < N; ++j) {
      float xhat = (load(a.v[j]) - m) * s, dxhat = load(d.v[j]) * load(wu.v[j]);
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
    }
  }
  float mean_dxhat = warp_sum(sum_dxhat) / float(C);
  float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / float(C);
  V* dx = reinterpret_cast<V*>(din + row * C);
  const V* extra = add_to_din ? reinterpret_cast<const V*>(add_to_din + row * C) : nullptr;
  for (int64_t u = lane; u < units; u += kWarp) {
    const V a = x[u], d = dy[u], wu = w[u];
    V e;
    if (extra) e = extra[u];
    V out;
    for (int j = 0; j < N; ++j) {
      const float xhat = (load(a.v[j]) - m) * s;
      float value = dx_of(xhat, load(d.v[j]) * load(wu.v[j]), s, mean_dxhat, mean_dxhat_xhat);
      if (extra) value += load(e.v[j]);  // the input's gradient from elsewhere, in the same pass
      out.v[j] = store<T>(value);
    }
    dx[u] = out;  // written, not added: din may be add_to_din itself
  }
}

// dweight = column sums of dy * xhat, dbias = column sums of dy, in two
// deterministic stages (column_sums.cuh), V columns a thread.
template <typename T, int V>
__global__ void layernorm_backward_params_kernel(float* weight_partials, float* bias_partials, const T* dout,
                                                 const T* in, const float* mean, const float* rstd, int64_t N,
                                                 int64_t C) {
  float* const outs[2] = {weight_partials, bias_partials};
  column_partial_sums<2, V>(outs, N, C, [&](int64_t row, int64_t c, float (&v)[2][V]) {
    const Vec<T, V> dy = *reinterpret_cast<const Vec<T, V>*>(dout + row * C + c);
    const Vec<T, V> x = *reinterpret_cast<const Vec<T, V>*>(in + row * C + c);
    const float m = mean[row], s = rstd[row];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      v[0][j] = load(dy.v[j]) * (load(x.v[j]) - m) * s;
      v[1][j] = load(dy.v[j]);
    }
  });
}

// LayerNorm's backward in one pass over the rows: dx a warp a row (as
// layernorm_backward_input_kernel), with dweight and dbias summed on the
// way, so dy and x are read once (the two-kernel path reads them again for
// the sums: 25 times a GPT-2 step). Block b owns chunk b of the rows
// (kColumnSumChunks chunks, as column_sums.cuh) and its warp w rows w,
// w + kFusedWarps, ... of it. A lane's columns are fixed (units lane, lane
// + 32, ...), so their sums stay in its registers across rows, as do the
// row's x and dy between its two passes (statistics, then dx): U units of N
// values a lane, which bounds C (kMaxFusedUnits: 768 for GPT-2 small in
// 16 bits or f32; wider rows take the two kernels). The warps then add their
// sums in a fixed tree through shared memory and warp 0 writes the block's
// partial row; finish_column_sums adds the chunks in order. The same bits
// every run.
constexpr int kFusedWarps = 16;

// At 512 threads a thread has 128 registers: ptxas (sm_90) gives these 127
// (16 bits) and 128 (f32) with no spills; 4 units of 8 spilled 396 bytes.
template <int N>
constexpr int kMaxFusedUnits = N >= 8 ? 3 : N == 4 ? 6 : 0;

template <int N, int U, typename T>
__global__ void __launch_bounds__(kFusedWarps * kWarp)
    layernorm_backward_fused_kernel(T* din, float* weight_partials, float* bias_partials, const T* dout, const T* in,
                                    const T* weight, const float* mean, const float* rstd, const T* add_to_din,
                                    int64_t N_rows, int64_t C) {
  using V = Vec<T, N>;
  extern __shared__ float upper_half[];  // (kFusedWarps / 2) * C floats: the tree's upper warps' sums
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t units = C / N;
  const int64_t chunk_rows = (N_rows + kColumnSumChunks - 1) / kColumnSumChunks;
  const int64_t first = int64_t(blockIdx.x) * chunk_rows, last = min(N_rows, first + chunk_rows);
  const V* w = reinterpret_cast<const V*>(weight);
  float sums[2][U][N] = {};  // this lane's columns of dweight, dbias
  for (int64_t row = first + warp; row < last; row += kFusedWarps) {
    const V *xr = reinterpret_cast<const V*>(in + row * C), *dyr = reinterpret_cast<const V*>(dout + row * C);
    V x[U] = {}, dy[U] = {};  // units past the row stay unread
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t u = lane + i * kWarp;
      if (u < units) x[i] = xr[u], dy[i] = dyr[u];
    }
    const float m = mean[row], s = rstd[row];
    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t u = lane + i * kWarp;
      if (u >= units) continue;
      const V wu = w[u];
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float xhat = (load(x[i].v[j]) - m) * s, dxhat = load(dy[i].v[j]) * load(wu.v[j]);
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
      }
    }
    const float mean_dxhat = warp_sum(sum_dxhat) / float(C);
    const float mean_dxhat_xhat = warp_sum(sum_dxhat_xhat) / float(C);
    V* dx = reinterpret_cast<V*>(din + row * C);
    const V* extra = add_to_din ? reinterpret_cast<const V*>(add_to_din + row * C) : nullptr;
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t u = lane + i * kWarp;
      if (u >= units) continue;
      const V wu = w[u];
      V e, out;
      if (extra) e = extra[u];
#pragma unroll
      for (int j = 0; j < N; ++j) {
        const float xhat = (load(x[i].v[j]) - m) * s, d = load(dy[i].v[j]);
        float value = dx_of(xhat, d * load(wu.v[j]), s, mean_dxhat, mean_dxhat_xhat);
        if (extra) value += load(e.v[j]);
        out.v[j] = store<T>(value);
        sums[0][i][j] += d * xhat;
        sums[1][i][j] += d;
      }
      dx[u] = out;  // written, not added: din may be add_to_din itself
    }
  }
  // The tree: each round the upper half of the warps still in it hands its
  // sums to the lower half, one of the two sums at a time (half the memory).
#pragma unroll
  for (int half = kFusedWarps / 2; half >= 1; half /= 2) {
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      __syncthreads();  // the last hand-over is read
      if (warp >= half && warp < 2 * half) {
#pragma unroll
        for (int i = 0; i < U; ++i) {
          const int64_t u = lane + i * kWarp;
#pragma unroll
          for (int j = 0; j < N; ++j) {
            if (u < units) upper_half[(warp - half) * C + u * N + j] = sums[k][i][j];
          }
        }
      }
      __syncthreads();
      if (warp < half) {
#pragma unroll
        for (int i = 0; i < U; ++i) {
          const int64_t u = lane + i * kWarp;
#pragma unroll
          for (int j = 0; j < N; ++j) {
            if (u < units) sums[k][i][j] += upper_half[warp * C + u * N + j];
          }
        }
      }
    }
  }
  if (warp != 0) return;
  float* const partials[2] = {weight_partials + int64_t(blockIdx.x) * C, bias_partials + int64_t(blockIdx.x) * C};
#pragma unroll
  for (int k = 0; k < 2; ++k) {
#pragma unroll
    for (int i = 0; i < U; ++i) {
      const int64_t u = lane + i * kWarp;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        if (u < units) partials[k][u * N + j] = sums[k][i][j];
      }
    }
  }
}

// Launches the fused kernel with U = units (a lane's units), for U up to
// kMaxFusedUnits<N>.
template <int N, typename T, int U = 1>
void launch_fused_backward(int units, T* din, float* partials, const T* dout, const T* in, const T* weight,
                           const float* mean, const float* rstd, const T* add_to_din, int64_t N_rows, int64_t C,
                           cudaStream_t stream) {
  if constexpr (U <= kMaxFusedUnits<N>) {
    if (units != U) {
      launch_fused_backward<N, T, U + 1>(units, din, partials, dout, in, weight, mean, rstd, add_to_din, N_rows, C,
                                         stream);
      return;
    }
    const size_t shared = size_t(kFusedWarps / 2) * size_t(C) * sizeof(float);
    layernorm_backward_fused_kernel<N, U, T><<<unsigned(kColumnSumChunks), kFusedWarps * kWarp, shared, stream>>>(
        din, partials, partials + kColumnSumChunks * C, dout, in, weight, mean, rstd, add_to_din, N_rows, C);
  } else {
    SG_FAIL("layernorm_backward: no fused kernel for ", units, " units a lane (the caller checks)");
  }
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

// The fused backward where C allows it; SG_LAYERNORM_FUSED_BACKWARD=0 takes
// the two kernels (input, then parameters) to compare. Read per call.
bool fused_backward_on() { return env_switch_on("SG_LAYERNORM_FUSED_BACKWARD"); }

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

void layernorm_backward(void* din, const SumOutput& dweight, const SumOutput& dbias, float* partials, const void* dout,
                        const void* in, const void* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                        DType dtype, cudaStream_t stream, const void* add_to_din) {
  if (N == 0 || C == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    bool fused = false;
    with_units<T>(C, {din, dout, in, weight, add_to_din}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      const int64_t lane_units = (C / kN + kWarp - 1) / kWarp;
      fused = lane_units <= kMaxFusedUnits<kN> && fused_backward_on();
      if (fused) {
        launch_fused_backward<kN, T>(int(lane_units), static_cast<T*>(din), partials, static_cast<const T*>(dout),
                                     static_cast<const T*>(in), static_cast<const T*>(weight), mean, rstd,
                                     static_cast<const T*>(add_to_din), N, C, stream);
        return;
      }
      layernorm_backward_input_kernel<kN, T><<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(
          static_cast<T*>(din), static_cast<const T*>(dout), static_cast<const T*>(in),
          static_cast<const T*>(weight), mean, rstd, static_cast<const T*>(add_to_din), N, C);
    });
    SG_CHECK_LAUNCH();
    if (fused) return;
    with_units<T>(C, {dout, in}, [&](auto units) {
      constexpr int V = decltype(units)::value;
      layernorm_backward_params_kernel<T, V><<<column_sum_grid(C, V), column_sum_block(), 0, stream>>>(
          partials, partials + kColumnSumChunks * C, static_cast<const T*>(dout), static_cast<const T*>(in), mean,
          rstd, N, C);
    });
    SG_CHECK_LAUNCH();
  });
  finish_column_sums_into<2>({dweight, dbias}, {partials, partials + kColumnSumChunks * C}, C, stream);
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
