// Fused attention kernels (kernels/cuda/flash_attention.h). MAX_HS is the
// head size rounded up to 16, 32, 64 or 128, so the per-row arrays live in
// registers (indexed only by unrolled loops); `hs` is the real head size.
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/flash_attention_tc.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/cuda/warp.cuh"

namespace sg::cuda {
namespace {

// Rows per tile: 16 KB of shared memory per tile pair (K and V, or Q and dO).
template <int MAX_HS>
constexpr int tile_rows() {
  return MAX_HS <= 64 ? 32 : 16;
}

struct Dims {
  int64_t T, C, NH;
  int hs;
  float scale;
};

// Element i of head h's q (part 0), k (1) or v (2) of token row `row` (b * T + t).
__device__ __forceinline__ int64_t qkv_index(const Dims& d, int64_t row, int part, int64_t h, int i) {
  return row * 3 * d.C + part * d.C + h * d.hs + i;
}
__device__ __forceinline__ int64_t out_index(const Dims& d, int64_t row, int64_t h, int i) {
  return row * d.C + h * d.hs + i;
}

// Rows [first, first + kTile) of part `part` of head h into tile (f32),
// zeros past T and past the head size: the unrolled loops read all MAX_HS
// columns, and shared memory left by an earlier kernel may hold inf or NaN,
// which 0 * x would carry into the scores (the CUDA emulator, which fills
// shared memory with NaN, found this).
template <int MAX_HS, int STRIDE, typename T>
__device__ void load_tile(float (*tile)[STRIDE], const T* qkv, const Dims& d, int64_t b, int64_t h, int64_t first,
                          int part) {
  constexpr int kTile = tile_rows<MAX_HS>();
  for (int index = threadIdx.x; index < kTile * MAX_HS; index += blockDim.x) {
    const int r = index / MAX_HS, i = index % MAX_HS;
    const int64_t t = first + r;
    tile[r][i] = t < d.T && i < d.hs ? load(qkv[qkv_index(d, b * d.T + t, part, h, i)]) : 0.0f;
  }
}

template <typename T, int MAX_HS>
__global__ void __launch_bounds__(tile_rows<MAX_HS>())
    flash_forward_kernel(T* out, float* lse, const T* qkv, Dims d) {
  constexpr int kTile = tile_rows<MAX_HS>();
  __shared__ float k_tile[kTile][MAX_HS];
  __shared__ float v_tile[kTile][MAX_HS];
  const int64_t b = blockIdx.y / d.NH, h = blockIdx.y % d.NH;
  const int64_t first_row = int64_t(blockIdx.x) * kTile, t = first_row + threadIdx.x;
  const bool active = t < d.T;
  float q[MAX_HS], o[MAX_HS];
#pragma unroll
  for (int i = 0; i < MAX_HS; ++i) {
    q[i] = active && i < d.hs ? load(qkv[qkv_index(d, b * d.T + t, 0, h, i)]) * d.scale : 0.0f;
    o[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int64_t last_row = min(d.T - 1, first_row + kTile - 1);
  for (int64_t s0 = 0; s0 <= last_row; s0 += kTile) {
    __syncthreads();  // every thread is done with the previous tile
    load_tile<MAX_HS>(k_tile, qkv, d, b, h, s0, 1);
    load_tile<MAX_HS>(v_tile, qkv, d, b, h, s0, 2);
    __syncthreads();
    if (!active) continue;
    const int64_t keys = min(int64_t(kTile), t - s0 + 1);  // the keys s <= t of this tile
    for (int r = 0; r < keys; ++r) {
      float score = 0.0f;
#pragma unroll
      for (int i = 0; i < MAX_HS; ++i) score += q[i] * k_tile[r][i];  // q is 0 past hs
      if (score > m) {  // a new max: rescale what was summed so far
        const float correction = expf(m - score);
        l *= correction;
#pragma unroll
        for (int i = 0; i < MAX_HS; ++i) o[i] *= correction;
        m = score;
      }
      const float p = expf(score - m);
      l += p;
#pragma unroll
      for (int i = 0; i < MAX_HS; ++i) o[i] += p * v_tile[r][i];
    }
  }
  if (!active) return;
  const float inverse = 1.0f / l;
#pragma unroll
  for (int i = 0; i < MAX_HS; ++i) {
    if (i < d.hs) out[out_index(d, b * d.T + t, h, i)] = store<T>(o[i] * inverse);
  }
  lse[blockIdx.y * d.T + t] = m + logf(l);
}

// D[b, h, t] = dO_t . O_t over the head's channels: a warp per row, its
// lanes reading the row's channels side by side, the lanes' parts added by
// shuffles. (A thread per row, walking its channels, touched a new line on
// every read: 54 us a GPT-2 layer on an H100, where reading dO and O once
// takes about 10.)
template <typename T>
__global__ void flash_backward_d_kernel(float* D, const T* dout, const T* out, Dims d, int64_t rows) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp; row < rows; row += warps) {
    const int64_t t = row % d.T, h = (row / d.T) % d.NH, b = row / (d.T * d.NH);
    float sum = 0.0f;
    for (int i = lane; i < d.hs; i += kWarp) {
      const int64_t index = out_index(d, b * d.T + t, h, i);
      sum += load(dout[index]) * load(out[index]);
    }
    sum = warp_sum(sum);
    if (lane == 0) D[row] = sum;
  }
}

// One thread per key row s: dK_s and dV_s over the queries t >= s.
template <typename T, int MAX_HS>
__global__ void __launch_bounds__(tile_rows<MAX_HS>())
    flash_backward_dkdv_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D, Dims d) {
  constexpr int kTile = tile_rows<MAX_HS>();
  __shared__ float k_own[kTile][MAX_HS + 1];  // this block's key rows; +1: no bank conflicts per thread
  __shared__ float v_own[kTile][MAX_HS + 1];
  __shared__ float q_tile[kTile][MAX_HS];
  __shared__ float do_tile[kTile][MAX_HS];
  __shared__ float lse_tile[kTile], d_tile[kTile];
  const int64_t b = blockIdx.y / d.NH, h = blockIdx.y % d.NH;
  const int64_t first_key = int64_t(blockIdx.x) * kTile, s = first_key + threadIdx.x;
  const bool active = s < d.T;
  load_tile<MAX_HS>(k_own, qkv, d, b, h, first_key, 1);
  load_tile<MAX_HS>(v_own, qkv, d, b, h, first_key, 2);
  float dk[MAX_HS], dv[MAX_HS];
#pragma unroll
  for (int i = 0; i < MAX_HS; ++i) dk[i] = dv[i] = 0.0f;
  for (int64_t t0 = first_key; t0 < d.T; t0 += kTile) {
    __syncthreads();
    load_tile<MAX_HS>(q_tile, qkv, d, b, h, t0, 0);
    for (int index = threadIdx.x; index < kTile * d.hs; index += blockDim.x) {
      const int r = index / d.hs, i = index % d.hs;
      const int64_t t = t0 + r;
      do_tile[r][i] = t < d.T ? load(dout[out_index(d, b * d.T + t, h, i)]) : 0.0f;
    }
    for (int r = threadIdx.x; r < kTile; r += blockDim.x) {
      const int64_t t = t0 + r;
      lse_tile[r] = t < d.T ? lse[blockIdx.y * d.T + t] : 0.0f;
      d_tile[r] = t < d.T ? D[blockIdx.y * d.T + t] : 0.0f;
    }
    __syncthreads();
    if (!active) continue;
    for (int r = 0; r < kTile; ++r) {
      const int64_t t = t0 + r;
      if (t < s || t >= d.T) continue;  // causal: only queries at or after the key
      float score = 0.0f, dp = 0.0f;
#pragma unroll
      for (int i = 0; i < MAX_HS; ++i) {
        if (i < d.hs) {
          score += q_tile[r][i] * k_own[threadIdx.x][i];
          dp += do_tile[r][i] * v_own[threadIdx.x][i];
        }
      }
      const float p = expf(score * d.scale - lse_tile[r]);
      const float ds = p * (dp - d_tile[r]) * d.scale;
#pragma unroll
      for (int i = 0; i < MAX_HS; ++i) {
        if (i < d.hs) {
          dv[i] += p * do_tile[r][i];
          dk[i] += ds * q_tile[r][i];
        }
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int i = 0; i < MAX_HS; ++i) {
    if (i < d.hs) {
      dqkv[qkv_index(d, b * d.T + s, 1, h, i)] = store<T>(dk[i]);  // the one writer of each element
      dqkv[qkv_index(d, b * d.T + s, 2, h, i)] = store<T>(dv[i]);
    }
  }
}

// One thread per query row t: dQ_t over the keys s <= t.
template <typename T, int MAX_HS>
__global__ void __launch_bounds__(tile_rows<MAX_HS>())
    flash_backward_dq_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D, Dims d) {
  constexpr int kTile = tile_rows<MAX_HS>();
  __shared__ float k_tile[kTile][MAX_HS];
  __shared__ float v_tile[kTile][MAX_HS];
  __shared__ float do_own[kTile][MAX_HS + 1];
  const int64_t b = blockIdx.y / d.NH, h = blockIdx.y % d.NH;
  const int64_t first_row = int64_t(blockIdx.x) * kTile, t = first_row + threadIdx.x;
  const bool active = t < d.T;
  for (int index = threadIdx.x; index < kTile * d.hs; index += blockDim.x) {
    const int r = index / d.hs, i = index % d.hs;
    do_own[r][i] = first_row + r < d.T ? load(dout[out_index(d, b * d.T + first_row + r, h, i)]) : 0.0f;
  }
  float q[MAX_HS], dq[MAX_HS];
#pragma unroll
  for (int i = 0; i < MAX_HS; ++i) {
    q[i] = active && i < d.hs ? load(qkv[qkv_index(d, b * d.T + t, 0, h, i)]) * d.scale : 0.0f;
    dq[i] = 0.0f;
  }
  const float row_lse = active ? lse[blockIdx.y * d.T + t] : 0.0f;
  const float row_d = active ? D[blockIdx.y * d.T + t] : 0.0f;
  const int64_t last_row = min(d.T - 1, first_row + kTile - 1);
  for (int64_t s0 = 0; s0 <= last_row; s0 += kTile) {
    __syncthreads();
    load_tile<MAX_HS>(k_tile, qkv, d, b, h, s0, 1);
    load_tile<MAX_HS>(v_tile, qkv, d, b, h, s0, 2);
    __syncthreads();
    if (!active) continue;
    const int64_t keys = min(int64_t(kTile), t - s0 + 1);
    for (int r = 0; r < keys; ++r) {
      float score = 0.0f, dp = 0.0f;
#pragma unroll
      for (int i = 0; i < MAX_HS; ++i) {
        score += q[i] * k_tile[r][i];
        if (i < d.hs) dp += do_own[threadIdx.x][i] * v_tile[r][i];
      }
      const float p = expf(score - row_lse);
      const float ds = p * (dp - row_d) * d.scale;
#pragma unroll
      for (int i = 0; i < MAX_HS; ++i) dq[i] += ds * k_tile[r][i];
    }
  }
  if (!active) return;
#pragma unroll
  for (int i = 0; i < MAX_HS; ++i) {
    if (i < d.hs) dqkv[qkv_index(d, b * d.T + t, 0, h, i)] = store<T>(dq[i]);
  }
}

// Calls fn(std::integral_constant<int, MAX_HS>{}) for the head size's bucket.
template <typename Fn>
void with_max_head_size(int64_t hs, Fn&& fn) {
  if (hs <= 16) fn(std::integral_constant<int, 16>{});
  else if (hs <= 32) fn(std::integral_constant<int, 32>{});
  else if (hs <= 64) fn(std::integral_constant<int, 64>{});
  else fn(std::integral_constant<int, 128>{});
}

Dims dims_of(int64_t T, int64_t C, int64_t NH) {
  const int64_t hs = C / NH;
  SG_CHECK(hs >= 1 && hs <= kFlashMaxHeadSize, "fused attention supports head sizes 1 to ", kFlashMaxHeadSize,
           ", got C / NH = ", hs, "; use the naive attention");
  return Dims{T, C, NH, int(hs), 1.0f / sqrtf(float(hs))};
}

dim3 grid_of(int64_t B, int64_t T, int64_t NH, int tile) {
  SG_CHECK(B * NH <= 65535, "fused attention: B * NH = ", B * NH, " exceeds the grid's 65535; split the batch");
  return dim3(unsigned((T + tile - 1) / tile), unsigned(B * NH));
}

}  // namespace

void flash_attention_forward(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                             DType dtype, cudaStream_t stream) {
  if (B * T * C == 0) return;
  const Dims d = dims_of(T, C, NH);
  if (flash_tensor_cores_apply(dtype, d.hs) && all_aligned16({out, qkv})) {
    flash_forward_tensor_cores(out, lse, qkv, B, T, C, NH, dtype, stream);
    return;
  }
  with_float_type(dtype, [&](auto type_tag) {
    using Ty = decltype(type_tag);
    with_max_head_size(d.hs, [&](auto max_hs) {
      constexpr int MAX_HS = decltype(max_hs)::value;
      constexpr int kTile = tile_rows<MAX_HS>();
      flash_forward_kernel<Ty, MAX_HS><<<grid_of(B, T, NH, kTile), kTile, 0, stream>>>(
          static_cast<Ty*>(out), lse, static_cast<const Ty*>(qkv), d);
    });
  });
  SG_CHECK_LAUNCH();
}

int64_t flash_attention_backward_scratch(int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype) {
  return flash_dq_partial_floats(B, T, C, NH, dtype);
}

void flash_attention_backward(void* dqkv, float* D, const void* dout, const void* qkv, const void* out,
                              const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype,
                              cudaStream_t stream, float* dq_partials) {
  if (B * T * C == 0) return;
  const Dims d = dims_of(T, C, NH);
  with_float_type(dtype, [&](auto type_tag) {
    using Ty = decltype(type_tag);
    const auto* dO = static_cast<const Ty*>(dout);
    const auto* x = static_cast<const Ty*>(qkv);
    if (flash_tensor_cores_apply(dtype, d.hs) && all_aligned16({dqkv, dout, qkv, out})) {
      flash_backward_tensor_cores(dqkv, D, dout, qkv, out, lse, B, T, C, NH, dtype, stream, dq_partials);  // D too
      return;
    }
    flash_backward_d_kernel<Ty><<<blocks_for(B * NH * T * kWarp), kThreads, 0, stream>>>(
        D, dO, static_cast<const Ty*>(out), d, B * NH * T);
    SG_CHECK_LAUNCH();
    with_max_head_size(d.hs, [&](auto max_hs) {
      constexpr int MAX_HS = decltype(max_hs)::value;
      constexpr int kTile = tile_rows<MAX_HS>();
      auto* dx = static_cast<Ty*>(dqkv);
      flash_backward_dkdv_kernel<Ty, MAX_HS><<<grid_of(B, T, NH, kTile), kTile, 0, stream>>>(dx, dO, x, lse, D, d);
      SG_CHECK_LAUNCH();
      flash_backward_dq_kernel<Ty, MAX_HS><<<grid_of(B, T, NH, kTile), kTile, 0, stream>>>(dx, dO, x, lse, D, d);
      SG_CHECK_LAUNCH();
    });
  });
}

}  // namespace sg::cuda
