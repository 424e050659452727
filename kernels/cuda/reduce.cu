// CUDA reductions, in two deterministic stages. Stage 1: up to
// kReducePartials blocks each sum a grid-strided slice of the input in double
// (as the CPU twin does) and reduce it in shared memory to one partial.
// Stage 2: one block combines the partials, in a fixed order. The grid size
// depends only on n, so the same input gives the same bits every run.
//
// One block alone (this file's first version) reads with one SM: for a
// GPT-2 gradient norm, 124M floats, milliseconds a step (estimated, at an
// SM's ~100 GB/s) where the whole GPU reads them in a fraction of one.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.h"

#include "kernels/adamw_math.h"

namespace sg::cuda {
namespace {

constexpr int kReduceThreads = 256;

enum class Reduction { sum, max, squared_norm };

__device__ __forceinline__ double combine(Reduction kind, double a, double b) {
  return kind == Reduction::max ? fmax(a, b) : a + b;
}

// The block's values in shared[0, blockDim.x) reduced into shared[0].
__device__ void block_reduce(Reduction kind, double* shared) {
  __syncthreads();
  for (int width = kReduceThreads / 2; width > 0; width /= 2) {
    if (int(threadIdx.x) < width) shared[threadIdx.x] = combine(kind, shared[threadIdx.x], shared[threadIdx.x + width]);
    __syncthreads();
  }
}

template <Reduction kind>
__global__ void reduce_partials_kernel(double* partials, const float* in, int64_t n) {
  __shared__ double shared[kReduceThreads];
  double acc = kind == Reduction::max ? -INFINITY : 0.0;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double x = in[i];
    acc = combine(kind, acc, kind == Reduction::squared_norm ? x * x : x);
  }
  shared[threadIdx.x] = acc;
  block_reduce(kind, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = shared[0];
}

// Stage 1 over several buffers: each block sums the squares of its
// grid-strided slice of every buffer in turn (so every block reads every
// buffer, large or small), the buffers in their order.
struct ReduceBuffers {
  const float* data[kMaxReduceTensors];
  int64_t n[kMaxReduceTensors];
  int count;
};

__global__ void squares_partials_kernel(double* partials, ReduceBuffers buffers) {
  __shared__ double shared[kReduceThreads];
  double acc = 0.0;
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  for (int b = 0; b < buffers.count; ++b) {
    for (int64_t i = first; i < buffers.n[b]; i += stride) {
      const double x = buffers.data[b][i];
      acc += x * x;
    }
  }
  shared[threadIdx.x] = acc;
  block_reduce(Reduction::sum, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = shared[0];
}

// Squared norms' partials are sums: kind here is sum or max.
template <Reduction kind>
__global__ void reduce_final_kernel(float* out, const double* partials, int count) {
  __shared__ double shared[kReduceThreads];
  double acc = kind == Reduction::max ? -INFINITY : 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc = combine(kind, acc, partials[i]);
  shared[threadIdx.x] = acc;
  block_reduce(kind, shared);
  if (threadIdx.x == 0) *out = float(shared[0]);
}

// Enough blocks to keep every SM reading (16 elements per thread at least).
int partial_count(int64_t n) {
  const int64_t blocks = (n + kReduceThreads * 16 - 1) / (kReduceThreads * 16);
  return int(blocks < 1 ? 1 : (blocks > kReducePartials ? kReducePartials : blocks));
}

template <Reduction kind>
void launch(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream) {
  const int blocks = partial_count(n);
  reduce_partials_kernel<kind><<<blocks, kReduceThreads, 0, stream>>>(partials, in, n);
  SG_CHECK_LAUNCH();
  constexpr Reduction final_kind = kind == Reduction::max ? Reduction::max : Reduction::sum;
  reduce_final_kernel<final_kind><<<1, kReduceThreads, 0, stream>>>(out, partials, blocks);
  SG_CHECK_LAUNCH();
}

}  // namespace

void sum_forward(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream) {
  launch<Reduction::sum>(out, partials, in, n, stream);
}
void max_forward(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream) {
  launch<Reduction::max>(out, partials, in, n, stream);
}
void squared_norm_forward(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream) {
  launch<Reduction::squared_norm>(out, partials, in, n, stream);
}

// The grid of each stage-1 launch depends only on its buffers' total size,
// and stage 2 adds the partials in launch order: the same bits every run.
void squared_norm_total(float* out, double* partials, const float* const* in, const int64_t* sizes, int count,
                        cudaStream_t stream) {
  int written = 0;
  for (int first = 0; first < count; first += kMaxReduceTensors) {
    ReduceBuffers buffers{};
    int64_t total = 0;
    for (int i = first; i < count && i < first + kMaxReduceTensors; ++i) {
      buffers.data[buffers.count] = in[i], buffers.n[buffers.count] = sizes[i];
      ++buffers.count, total += sizes[i];
    }
    const int blocks = partial_count(total);
    squares_partials_kernel<<<blocks, kReduceThreads, 0, stream>>>(partials + written, buffers);
    SG_CHECK_LAUNCH();
    written += blocks;
  }
  reduce_final_kernel<Reduction::sum><<<1, kReduceThreads, 0, stream>>>(out, partials, written);
  SG_CHECK_LAUNCH();
}

namespace {

__global__ void clip_grad_factor_kernel(float* factor, const float* squares, double loss_scale, double max_norm,
                                        bool skip_on_overflow) {
  const double s = double(*squares);
  *factor = float(skip_on_overflow ? sg::clip_grad_factor_or_skip(s, loss_scale, max_norm)
                                   : sg::clip_grad_factor(s, loss_scale, max_norm));
}

}  // namespace

void clip_grad_factor(float* factor, const float* squares, double loss_scale, double max_norm, bool skip_on_overflow,
                      cudaStream_t stream) {
  clip_grad_factor_kernel<<<1, 1, 0, stream>>>(factor, squares, loss_scale, max_norm, skip_on_overflow);
  SG_CHECK_LAUNCH();
}

}  // namespace sg::cuda
