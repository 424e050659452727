// CUDA embedding and cross-entropy. Cross-entropy works one warp per row of
// logits: max, then sum of exponentials, then the loss; the backward pass
// recomputes softmax from the saved logsumexp instead of storing (N, V).
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/loss.h"
#include "kernels/cuda/warp.cuh"

namespace sg::cuda {
namespace {

__global__ void embedding_forward_kernel(float* out, const float* table, const int32_t* ids, int64_t N, int64_t C) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * C; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n = i / C, c = i % C;
    out[i] = table[int64_t(ids[n]) * C + c];
  }
}

__global__ void embedding_backward_kernel(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * C; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n = i / C, c = i % C;
    atomicAdd(dtable + int64_t(ids[n]) * C + c, dout[i]);
  }
}

__global__ void cross_entropy_forward_kernel(float* losses, float* lse, const float* logits, const int32_t* targets,
                                             int64_t N, int64_t V) {
  int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  int lane = threadIdx.x % kWarp;
  if (row >= N) return;
  const float* x = logits + row * V;
  float max_value = -INFINITY;
  for (int64_t j = lane; j < V; j += kWarp) max_value = fmaxf(max_value, x[j]);
  max_value = warp_max(max_value);
  float sum = 0.0f;
  for (int64_t j = lane; j < V; j += kWarp) sum += expf(x[j] - max_value);
  float log_sum_exp = max_value + logf(warp_sum(sum));
  if (lane == 0) {
    lse[row] = log_sum_exp;
    losses[row] = targets[row] < 0 ? 0.0f : log_sum_exp - x[targets[row]];
  }
}

__global__ void cross_entropy_backward_kernel(float* dlogits, const float* dlosses, const float* logits,
                                              const float* lse, const int32_t* targets, int64_t N, int64_t V) {
  int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  int lane = threadIdx.x % kWarp;
  if (row >= N || targets[row] < 0) return;
  const float* x = logits + row * V;
  float* dx = dlogits + row * V;
  float d = dlosses[row], l = lse[row];
  int32_t target = targets[row];
  for (int64_t j = lane; j < V; j += kWarp) dx[j] += d * (expf(x[j] - l) - (j == target ? 1.0f : 0.0f));
}

}  // namespace

void embedding_forward(float* out, const float* table, const int32_t* ids, int64_t N, int64_t C, cudaStream_t stream) {
  if (N * C == 0) return;
  embedding_forward_kernel<<<blocks_for(N * C), kThreads, 0, stream>>>(out, table, ids, N, C);
  SG_CHECK_LAUNCH();
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t N, int64_t C,
                        cudaStream_t stream) {
  if (N * C == 0) return;
  embedding_backward_kernel<<<blocks_for(N * C), kThreads, 0, stream>>>(dtable, dout, ids, N, C);
  SG_CHECK_LAUNCH();
}

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t N,
                           int64_t V, cudaStream_t stream) {
  if (N == 0) return;
  cross_entropy_forward_kernel<<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(losses, lse, logits, targets, N, V);
  SG_CHECK_LAUNCH();
}

void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t V, cudaStream_t stream) {
  if (N == 0) return;
  cross_entropy_backward_kernel<<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(dlogits, dlosses, logits, lse,
                                                                                       targets, N, V);
  SG_CHECK_LAUNCH();
}

}  // namespace sg::cuda
