// CUDA embedding and cross-entropy. Cross-entropy works one warp per row of
// logits: max, then sum of exponentials, then the loss; the backward pass
// recomputes softmax from the saved logsumexp instead of storing (N, V).
// cross_entropy_with_grad does both in one kernel, a block per row.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/cuda/loss.h"
#include "kernels/cuda/warp.cuh"

namespace sg::cuda {
namespace {

template <typename T>
__global__ void embedding_forward_kernel(T* out, const T* table, const int32_t* ids, int64_t N, int64_t C) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < N * C; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n = i / C, c = i % C;
    out[i] = table[int64_t(ids[n]) * C + c];
  }
}

// dtable[ids[n], c] += dout[n, c], deterministically: each element of dtable
// has one writer, which adds its rows in position order, as the CPU twin
// does, so the bits match it and every run. (atomicAdd would be simpler,
// but its order, and so the rounding, changes from run to run.) Block
// (part, chunk) owns the ids with id % parts == part (parts a power of two)
// and kEmbeddingThreads * kEmbeddingChannels channels, kEmbeddingChannels
// per thread. Every block reads all N ids, a tile at a time, and needs only
// its own: each warp marks its 32 ids' matches in one word (a ballot), and
// the threads then visit just the set bits, in position order. With GPT-2's
// 8192 ids a step, that is 256 words to look at instead of 8192 ids.
constexpr int kEmbeddingThreads = 256;
constexpr int kEmbeddingChannels = 4;  // per thread
constexpr int kEmbeddingMaxParts = 1024;

template <typename T>
__global__ void embedding_backward_kernel(float* dtable, const T* dout, const int32_t* ids, int64_t N, int64_t C) {
  __shared__ int32_t tile[kEmbeddingThreads];
  __shared__ unsigned matches[kEmbeddingThreads / 32];  // bit b of word w: tile[32 w + b] is this block's
  const int64_t c0 = int64_t(blockIdx.y) * kEmbeddingThreads * kEmbeddingChannels + threadIdx.x;
  const int part = int(blockIdx.x), parts = int(gridDim.x);
  for (int64_t first = 0; first < N; first += kEmbeddingThreads) {
    __syncthreads();  // the previous tile is read by everyone
    const bool inside = first + threadIdx.x < N;
    const int32_t mine = inside ? ids[first + threadIdx.x] : 0;  // in [0, V): checked by the caller
    tile[threadIdx.x] = mine;
    const unsigned found = __ballot_sync(0xffffffffu, inside && (mine & (parts - 1)) == part);
    if (threadIdx.x % 32 == 0) matches[threadIdx.x / 32] = found;
    __syncthreads();
    for (int w = 0; w < kEmbeddingThreads / 32; ++w) {
      for (unsigned bits = matches[w]; bits != 0; bits &= bits - 1) {
        const int j = 32 * w + __ffs(int(bits)) - 1;  // the lowest set bit: positions in order
        const int32_t id = tile[j];
        float* row = dtable + int64_t(id) * C;
        const T* d = dout + (first + j) * C;
#pragma unroll
        for (int k = 0; k < kEmbeddingChannels; ++k) {
          const int64_t c = c0 + k * kEmbeddingThreads;
          if (c < C) row[c] += load(d[c]);
        }
      }
    }
  }
}

// One warp per row, one pass over the logits: each lane keeps a running max
// m and sum of exp(x - m) over its columns (rescaling the sum when m grows),
// then the lanes combine theirs. Logits in T (f32, bf16, f16), math in f32.
template <int N, typename T>
__global__ void cross_entropy_forward_kernel(float* losses, float* lse, const T* logits, const int32_t* targets,
                                             int64_t N_rows, int64_t V) {
  using Units = Vec<T, N>;
  int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  int lane = threadIdx.x % kWarp;
  if (row >= N_rows) return;
  const T* x = logits + row * V;
  const Units* xv = reinterpret_cast<const Units*>(x);
  float m = -INFINITY, sum = 0.0f;  // this lane's running max and sum of exp(x - max)
  for (int64_t u = lane; u < V / N; u += kWarp) {
    const Units a = xv[u];
    float unit_max = -INFINITY;
    for (int j = 0; j < N; ++j) unit_max = fmaxf(unit_max, load(a.v[j]));
    if (unit_max > m) {
      sum *= expf(m - unit_max);
      m = unit_max;
    }
    for (int j = 0; j < N; ++j) sum += expf(load(a.v[j]) - m);
  }
  const float max_value = warp_max(m);
  sum = warp_sum(m == -INFINITY ? 0.0f : sum * expf(m - max_value));
  const float log_sum_exp = max_value + logf(sum);
  if (lane == 0) {
    lse[row] = log_sum_exp;
    losses[row] = targets[row] < 0 ? 0.0f : log_sum_exp - load(x[targets[row]]);
  }
}

// dlogits = scale_n * (softmax(x) - onehot(target)), written (not added), so
// dlogits may be the logits' own buffer: each element is read, then written,
// by one thread. scale_n is dlosses[n] per row, or dloss[0] / count[0] for the
// mean (per_row false): read on the device, no host round trip.
template <int N, typename T>
__global__ void cross_entropy_backward_kernel(T* dlogits, const float* dlosses, const float* count, bool per_row,
                                              const T* logits, const float* lse, const int32_t* targets,
                                              int64_t N_rows, int64_t V) {
  using Units = Vec<T, N>;
  int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  int lane = threadIdx.x % kWarp;
  if (row >= N_rows) return;
  const Units* x = reinterpret_cast<const Units*>(logits + row * V);
  Units* dx = reinterpret_cast<Units*>(dlogits + row * V);
  const int32_t target = targets[row];
  const float d = target < 0 ? 0.0f : per_row ? dlosses[row] : dlosses[0] / count[0];
  const float l = lse[row];
  for (int64_t u = lane; u < V / N; u += kWarp) {
    const Units a = x[u];
    Units out;
    for (int j = 0; j < N; ++j) {
      out.v[j] = store<T>(d * (expf(load(a.v[j]) - l) - (u * N + j == target ? 1.0f : 0.0f)));
    }
    dx[u] = out;
  }
}

// The loss and its gradient in one kernel, for logits nobody else reads
// (autograd's linear_cross_entropy): per row the loss, and g = softmax(x) -
// onehot(target) written over x (0 on an ignored row); the backward applies
// dloss / count later, where the tensors are small. A block of
// kRowThreads threads a row, at most two blocks an SM: the rows in flight
// (~264 on an H100, 26 MB of GPT-2's 16-bit logits) stay in L2 between the
// pass that finds the row's max and sum and the pass that writes g, so the
// logits cross HBM once each way; the forward-then-backward pair above
// reads them twice and writes them once. Fixed-order reductions: the same
// bits every run.
constexpr int kRowThreads = 1024, kRowWarps = kRowThreads / kWarp;

template <int N, typename T>
__global__ void __launch_bounds__(kRowThreads, 2)
    cross_entropy_with_grad_kernel(float* losses, T* logits, const int32_t* targets, int64_t V) {
  using Units = Vec<T, N>;
  __shared__ float maxima[kRowWarps], sums[kRowWarps];
  const int64_t row = blockIdx.x;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  T* x = logits + row * V;
  Units* xv = reinterpret_cast<Units*>(x);
  const int32_t target = targets[row];
  // Read before any thread can overwrite it (every write is after the
  // reductions' barriers).
  const float target_logit = threadIdx.x == 0 && target >= 0 ? load(x[target]) : 0.0f;
  float m = -INFINITY, sum = 0.0f;  // this thread's running max and sum of exp(x - max)
  for (int64_t u = threadIdx.x; u < V / N; u += kRowThreads) {
    const Units a = xv[u];
    float unit_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < N; ++j) unit_max = fmaxf(unit_max, load(a.v[j]));
    if (unit_max > m) {
      sum *= expf(m - unit_max);
      m = unit_max;
    }
#pragma unroll
    for (int j = 0; j < N; ++j) sum += expf(load(a.v[j]) - m);
  }
  const float warp_max_value = warp_max(m);
  if (lane == 0) maxima[warp] = warp_max_value;
  __syncthreads();
  float max_value = -INFINITY;
  for (int w = 0; w < kRowWarps; ++w) max_value = fmaxf(max_value, maxima[w]);
  const float warp_total = warp_sum(m == -INFINITY ? 0.0f : sum * expf(m - max_value));
  if (lane == 0) sums[warp] = warp_total;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kRowWarps; ++w) total += sums[w];
  const float lse = max_value + logf(total);
  if (threadIdx.x == 0) losses[row] = target < 0 ? 0.0f : lse - target_logit;
  for (int64_t u = threadIdx.x; u < V / N; u += kRowThreads) {
    const Units a = xv[u];
    Units out;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float p = expf(load(a.v[j]) - lse) - (u * N + j == target ? 1.0f : 0.0f);
      out.v[j] = store<T>(target < 0 ? 0.0f : p);
    }
    xv[u] = out;
  }
}

// The mean over counted rows (target >= 0), in one block: each thread sums a
// strided part in a fixed order, then a tree in shared memory (the same bits
// every run).
__global__ void cross_entropy_mean_kernel(float* loss, float* count, const float* losses, const int32_t* targets,
                                          int64_t N) {
  __shared__ float sums[1024], counts[1024];
  float s = 0.0f, c = 0.0f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    if (targets[n] >= 0) {
      s += losses[n];
      c += 1.0f;
    }
  }
  sums[threadIdx.x] = s;
  counts[threadIdx.x] = c;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) {
      sums[threadIdx.x] += sums[threadIdx.x + stride];
      counts[threadIdx.x] += counts[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *loss = sums[0] / counts[0];  // 0 / 0 = NaN when every row is ignored, as in PyTorch
    *count = counts[0];
  }
}

}  // namespace

void embedding_forward(void* out, const void* table, const int32_t* ids, int64_t N, int64_t C, DType dtype,
                       cudaStream_t stream) {
  if (N * C == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    embedding_forward_kernel<T><<<blocks_for(N * C), kThreads, 0, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(table), ids, N, C);
  });
  SG_CHECK_LAUNCH();
}

void embedding_backward(float* dtable, const void* dout, const int32_t* ids, int64_t N, int64_t C, int64_t V,
                        DType dtype, cudaStream_t stream) {
  if (N * C == 0) return;
  // As many parts as ids can fill (V ids spread over the parts), up to 1024:
  // more blocks, each with fewer rows to add one after the other.
  int parts = 1;
  while (parts * 2 <= V && parts * 2 <= kEmbeddingMaxParts) parts *= 2;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t per_block = kEmbeddingThreads * kEmbeddingChannels;
    const dim3 grid(unsigned(parts), unsigned((C + per_block - 1) / per_block));
    embedding_backward_kernel<T><<<grid, kEmbeddingThreads, 0, stream>>>(dtable, static_cast<const T*>(dout), ids, N, C);
  });
  SG_CHECK_LAUNCH();
}

void cross_entropy_forward(float* losses, float* lse, const void* logits, const int32_t* targets, int64_t N,
                           int64_t V, DType dtype, cudaStream_t stream) {
  if (N == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_units<T>(V, {logits}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      cross_entropy_forward_kernel<kN, T><<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(
          losses, lse, static_cast<const T*>(logits), targets, N, V);
    });
  });
  SG_CHECK_LAUNCH();
}

void cross_entropy_backward(void* dlogits, const float* dlosses, const float* count, const void* logits,
                            const float* lse, const int32_t* targets, int64_t N, int64_t V, DType dtype,
                            cudaStream_t stream) {
  if (N == 0) return;
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_units<T>(V, {dlogits, logits}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      cross_entropy_backward_kernel<kN, T><<<blocks_for_rows(N, kThreads), kThreads, 0, stream>>>(
          static_cast<T*>(dlogits), dlosses, count, count == nullptr, static_cast<const T*>(logits), lse, targets,
          N, V);
    });
  });
  SG_CHECK_LAUNCH();
}

void cross_entropy_with_grad(float* losses, void* logits, const int32_t* targets, int64_t N, int64_t V,
                             DType dtype, cudaStream_t stream) {
  if (N == 0) return;
  SG_CHECK(N <= int64_t(INT32_MAX), "cross_entropy_with_grad: ", N, " rows; at most 2^31 - 1 (a block each)");
  with_float_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_units<T>(V, {logits}, [&](auto units) {
      constexpr int kN = decltype(units)::value;
      cross_entropy_with_grad_kernel<kN, T>
          <<<unsigned(N), kRowThreads, 0, stream>>>(losses, static_cast<T*>(logits), targets, V);
    });
  });
  SG_CHECK_LAUNCH();
}

void cross_entropy_mean(float* loss, float* count, const float* losses, const int32_t* targets, int64_t N,
                        cudaStream_t stream) {
  cross_entropy_mean_kernel<<<1, 1024, 0, stream>>>(loss, count, losses, targets, N);
  SG_CHECK_LAUNCH();
}

}  // namespace sg::cuda
