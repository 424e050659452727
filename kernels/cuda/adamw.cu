#include "kernels/cuda/adamw.h"

#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"

namespace sg::cuda {
namespace {

struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay, grad_scale, correction1, correction2;
  const float* grad_scale_at;  // when set: the scale, on the device (AdamWParams)
};

// N elements from index i on (a 16-byte access per f32 buffer when N = 4).
template <int N, typename CopyT>
__device__ __forceinline__ void adamw_unit(float* param, float* m, float* v, const float* grad, CopyT* copy,
                                           int64_t i, const AdamWArgs& a, float scale) {
  using F = Vec<float, N>;
  F p = *reinterpret_cast<const F*>(param + i), mi = *reinterpret_cast<const F*>(m + i);
  F vi = *reinterpret_cast<const F*>(v + i);
  const F g = *reinterpret_cast<const F*>(grad + i);
  Vec<CopyT, N> c;
  for (int k = 0; k < N; ++k) {
    adamw_element(&p.v[k], &mi.v[k], &vi.v[k], g.v[k] * scale, a.lr, a.beta1, a.beta2, a.eps, a.weight_decay,
                  a.correction1, a.correction2);
    c.v[k] = store<CopyT>(p.v[k]);
  }
  *reinterpret_cast<F*>(param + i) = p;
  *reinterpret_cast<F*>(m + i) = mi;
  *reinterpret_cast<F*>(v + i) = vi;
  if (copy != nullptr) *reinterpret_cast<Vec<CopyT, N>*>(copy + i) = c;
}

// The whole shard in one pass: N elements a thread per step, the n % N
// left over one each. Copy is the 16-bit parameter buffer (mixed
// precision), written in the same pass; CopyT = float with copy null when
// there is none.
template <int N, typename CopyT>
__global__ void adamw_kernel(float* param, float* m, float* v, const float* grad, int64_t n, AdamWArgs a,
                             CopyT* copy) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t body = n / N * N;
  const float scale = a.grad_scale_at != nullptr ? *a.grad_scale_at : a.grad_scale;
  if (AdamWParams::skips(scale)) return;  // fp16's overflowed step (the same value in every thread)
  for (int64_t u = first; u < n / N; u += stride) adamw_unit<N>(param, m, v, grad, copy, u * N, a, scale);
  for (int64_t i = body + first; i < n; i += stride) adamw_unit<1>(param, m, v, grad, copy, i, a, scale);
}

}  // namespace

void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& hp,
                  cudaStream_t stream, void* copy, DType copy_dtype) {
  if (n == 0) return;
  const AdamWArgs args{hp.lr,           hp.beta1,         hp.beta2, hp.eps, hp.weight_decay, hp.grad_scale,
                       hp.bias_correction1(), hp.bias_correction2(), hp.grad_scale_at};
  auto launch = [&](auto* typed_copy) {
    using CopyT = std::remove_pointer_t<decltype(typed_copy)>;
    // Four f32 values (16 bytes) per access where every buffer's start allows it.
    const bool vectors = all_aligned16({param, m, v, grad}) &&
                         reinterpret_cast<uintptr_t>(typed_copy) % (4 * sizeof(CopyT)) == 0;
    if (vectors) {
      adamw_kernel<4><<<blocks_for((n + 3) / 4), kThreads, 0, stream>>>(param, m, v, grad, n, args, typed_copy);
    } else {
      adamw_kernel<1><<<blocks_for(n), kThreads, 0, stream>>>(param, m, v, grad, n, args, typed_copy);
    }
  };
  if (copy == nullptr) launch(static_cast<float*>(nullptr));
  else with_float_type(copy_dtype, [&](auto tag) { launch(static_cast<decltype(tag)*>(copy)); });
  SG_CHECK_LAUNCH();
}

}  // namespace sg::cuda
