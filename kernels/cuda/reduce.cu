// CUDA reductions: one block of 1024 threads strides over the whole buffer,
// accumulating in double (as the CPU twin does), then reduces in shared
// memory. One block is simple and deterministic; it reads at a fraction of
// the GPU's bandwidth, which is fine for the losses and norms it serves now.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.h"

namespace sg::cuda {
namespace {

constexpr int kReduceThreads = 1024;

enum class Reduction { sum, max, squared_norm };

template <Reduction kind>
__global__ void reduce_kernel(float* out, const float* in, int64_t n) {
  __shared__ double partial[kReduceThreads];
  double acc = kind == Reduction::max ? -INFINITY : 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    double x = in[i];
    if constexpr (kind == Reduction::sum) acc += x;
    else if constexpr (kind == Reduction::squared_norm) acc += x * x;
    else acc = fmax(acc, x);
  }
  partial[threadIdx.x] = acc;
  __syncthreads();
  for (int width = kReduceThreads / 2; width > 0; width /= 2) {
    if (int(threadIdx.x) < width) {
      double other = partial[threadIdx.x + width];
      partial[threadIdx.x] = kind == Reduction::max ? fmax(partial[threadIdx.x], other) : partial[threadIdx.x] + other;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = float(partial[0]);
}

template <Reduction kind>
void launch(float* out, const float* in, int64_t n, cudaStream_t stream) {
  reduce_kernel<kind><<<1, kReduceThreads, 0, stream>>>(out, in, n);
  SG_CHECK_LAUNCH();
}

}  // namespace

void sum_forward(float* out, const float* in, int64_t n, cudaStream_t stream) { launch<Reduction::sum>(out, in, n, stream); }
void max_forward(float* out, const float* in, int64_t n, cudaStream_t stream) { launch<Reduction::max>(out, in, n, stream); }
void squared_norm_forward(float* out, const float* in, int64_t n, cudaStream_t stream) {
  launch<Reduction::squared_norm>(out, in, n, stream);
}

}  // namespace sg::cuda
