#include "kernels/cuda/adamw.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"

namespace sg::cuda {
namespace {

// Copy is the 16-bit parameter buffer (mixed precision), written in the same
// pass; CopyT = float with copy null when there is none.
template <typename CopyT>
__global__ void adamw_kernel(float* param, float* m, float* v, const float* grad, int64_t n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float grad_scale, float correction1,
                             float correction2, CopyT* copy) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    adamw_element(param + i, m + i, v + i, grad[i] * grad_scale, lr, beta1, beta2, eps, weight_decay, correction1,
                  correction2);
    if (copy != nullptr) copy[i] = store<CopyT>(param[i]);
  }
}

}  // namespace

void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& hp,
                  cudaStream_t stream, void* copy, DType copy_dtype) {
  if (n == 0) return;
  auto launch = [&](auto* typed_copy) {
    adamw_kernel<<<blocks_for(n), kThreads, 0, stream>>>(param, m, v, grad, n, hp.lr, hp.beta1, hp.beta2, hp.eps,
                                                         hp.weight_decay, hp.grad_scale, hp.bias_correction1(),
                                                         hp.bias_correction2(), typed_copy);
  };
  if (copy == nullptr) launch(static_cast<float*>(nullptr));
  else with_float_type(copy_dtype, [&](auto tag) { launch(static_cast<decltype(tag)*>(copy)); });
  SG_CHECK_LAUNCH();
}

}  // namespace sg::cuda
