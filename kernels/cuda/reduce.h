// CUDA twins of kernels/cpu/reduce.h. The result is written to *out in device
// memory, so a reduction never forces a host round trip by itself. partials
// is scratch for kReducePartials doubles (device memory, the caller's): the
// per-block results of the first of two stages (reduce.cu).
//
// Read next: kernels/cuda/adamw.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace sg::cuda {

constexpr int kReducePartials = 1024;

void sum_forward(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream);
void max_forward(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream);
void squared_norm_forward(float* out, double* partials, const float* in, int64_t n, cudaStream_t stream);

// The sum of the squared norms of `count` f32 buffers in[i] of sizes[i]
// elements (the gradient norm over every shard group): one stage-1 launch
// per kMaxReduceTensors buffers and one stage 2, where a reduction per
// buffer would take three launches each (two stages and an add). partials:
// scratch of reduce_total_partials(count) doubles.
constexpr int kMaxReduceTensors = 32;
inline int64_t reduce_total_partials(int64_t count) {
  return ((count + kMaxReduceTensors - 1) / kMaxReduceTensors) * kReducePartials;
}
void squared_norm_total(float* out, double* partials, const float* const* in, const int64_t* sizes, int count,
                        cudaStream_t stream);

// *factor = clip_grad_factor(*squares, loss_scale, max_norm) (kernels/adamw_math.h;
// clip_grad_factor_or_skip when skip_on_overflow), by one thread: AdamW reads
// it there, and the host never waits for the norm.
void clip_grad_factor(float* factor, const float* squares, double loss_scale, double max_norm, bool skip_on_overflow,
                      cudaStream_t stream);

}  // namespace sg::cuda
