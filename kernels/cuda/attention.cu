// Naive CUDA attention: one warp per (batch, head, query t) row. Lanes split
// the keys s <= t for scores and the head channels for outputs. The math is
// the CPU version's (kernels/cpu/attention.h); this is not the fast path.
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/warp.cuh"

namespace sg::cuda {
namespace {

constexpr int kAttentionThreads = 128;  // 4 warps per block
constexpr int64_t kMaxBackwardT = 3072;  // 4 warps * T floats must fit in 48 KiB of shared memory

struct Row {
  int64_t b, h, t;
};

__device__ __forceinline__ Row row_of(int64_t row, int64_t NH, int64_t T) {
  return Row{row / (NH * T), (row / T) % NH, row % T};
}

__global__ void attention_forward_kernel(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t C,
                                         int64_t NH) {
  int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  int lane = threadIdx.x % kWarp;
  if (row >= B * NH * T) return;
  Row r = row_of(row, NH, T);
  const int64_t HS = C / NH;
  const float scale = rsqrtf(float(HS));
  const float* q = qkv + (r.b * T + r.t) * 3 * C + r.h * HS;
  float* p = att + row * T;
  // Scores q . k_s / sqrt(HS) for s <= t, and their max.
  float max_score = -INFINITY;
  for (int64_t s = lane; s <= r.t; s += kWarp) {
    const float* k = qkv + (r.b * T + s) * 3 * C + C + r.h * HS;
    float dot = 0.0f;
    for (int64_t i = 0; i < HS; ++i) dot += q[i] * k[i];
    p[s] = dot * scale;
    max_score = fmaxf(max_score, p[s]);
  }
  max_score = warp_max(max_score);
  float sum = 0.0f;
  for (int64_t s = lane; s <= r.t; s += kWarp) {
    p[s] = expf(p[s] - max_score);
    sum += p[s];
  }
  float inverse = 1.0f / warp_sum(sum);
  for (int64_t s = lane; s < T; s += kWarp) p[s] = s <= r.t ? p[s] * inverse : 0.0f;
  __syncwarp();  // every lane's probabilities are visible to every lane below
  float* o = out + (r.b * T + r.t) * C + r.h * HS;
  for (int64_t i = lane; i < HS; i += kWarp) {
    float acc = 0.0f;
    for (int64_t s = 0; s <= r.t; ++s) acc += p[s] * qkv[(r.b * T + s) * 3 * C + 2 * C + r.h * HS + i];
    o[i] = acc;
  }
}

// dV[s] += P[s] dO and dK[s] += dS[s] q get contributions from every query row
// t >= s, handled by different warps: those use atomicAdd. dQ for row t is
// owned by this warp alone.
__global__ void attention_backward_kernel(float* dqkv, const float* dout, const float* qkv, const float* att, int64_t B,
                                          int64_t T, int64_t C, int64_t NH) {
  extern __shared__ float scratch[];  // T floats per warp: dP, then dS
  int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  int lane = threadIdx.x % kWarp;
  if (row >= B * NH * T) return;
  float* ds = scratch + (threadIdx.x / kWarp) * T;
  Row r = row_of(row, NH, T);
  const int64_t HS = C / NH;
  const float scale = rsqrtf(float(HS));
  const float* q = qkv + (r.b * T + r.t) * 3 * C + r.h * HS;
  const float* p = att + row * T;
  const float* dO = dout + (r.b * T + r.t) * C + r.h * HS;
  // dP[s] = dO . v_s, and the row's <dP, P>.
  float dot_dp_p = 0.0f;
  for (int64_t s = lane; s <= r.t; s += kWarp) {
    const float* v = qkv + (r.b * T + s) * 3 * C + 2 * C + r.h * HS;
    float* dv = dqkv + (r.b * T + s) * 3 * C + 2 * C + r.h * HS;
    float d = 0.0f;
    for (int64_t i = 0; i < HS; ++i) {
      d += dO[i] * v[i];
      atomicAdd(dv + i, p[s] * dO[i]);
    }
    ds[s] = d;
    dot_dp_p += d * p[s];
  }
  dot_dp_p = warp_sum(dot_dp_p);
  // dS = P * (dP - <dP, P>) / sqrt(HS); dK[s] += dS[s] q.
  for (int64_t s = lane; s <= r.t; s += kWarp) {
    ds[s] = p[s] * (ds[s] - dot_dp_p) * scale;
    float* dk = dqkv + (r.b * T + s) * 3 * C + C + r.h * HS;
    for (int64_t i = 0; i < HS; ++i) atomicAdd(dk + i, ds[s] * q[i]);
  }
  __syncwarp();
  // dQ = sum_s dS[s] k_s.
  float* dq = dqkv + (r.b * T + r.t) * 3 * C + r.h * HS;
  for (int64_t i = lane; i < HS; i += kWarp) {
    float acc = 0.0f;
    for (int64_t s = 0; s <= r.t; ++s) acc += ds[s] * qkv[(r.b * T + s) * 3 * C + C + r.h * HS + i];
    dq[i] += acc;
  }
}

}  // namespace

void attention_forward(float* out, float* att, const float* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                       cudaStream_t stream) {
  int64_t rows = B * NH * T;
  if (rows == 0) return;
  attention_forward_kernel<<<blocks_for_rows(rows, kAttentionThreads), kAttentionThreads, 0, stream>>>(out, att, qkv, B,
                                                                                                        T, C, NH);
  SG_CHECK_LAUNCH();
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int64_t B, int64_t T,
                        int64_t C, int64_t NH, cudaStream_t stream) {
  int64_t rows = B * NH * T;
  if (rows == 0) return;
  SG_CHECK(T <= kMaxBackwardT, "the naive CUDA attention backward supports T <= ", kMaxBackwardT, ", got T = ", T);
  size_t shared_bytes = size_t(kAttentionThreads / kWarp) * size_t(T) * sizeof(float);
  attention_backward_kernel<<<blocks_for_rows(rows, kAttentionThreads), kAttentionThreads, shared_bytes, stream>>>(
      dqkv, dout, qkv, att, B, T, C, NH);
  SG_CHECK_LAUNCH();
}

}  // namespace sg::cuda
