#include "kernels/cpu/adamw.h"

namespace sg::cpu {

void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& hp, void* copy,
                  DType copy_dtype) {
  const float correction1 = hp.bias_correction1(), correction2 = hp.bias_correction2(), scale = hp.scale();
  if (AdamWParams::skips(scale)) return;  // fp16's overflowed step
  bf16* to_bf16_copy = copy && copy_dtype == DType::bf16 ? static_cast<bf16*>(copy) : nullptr;
  f16* to_f16_copy = copy && copy_dtype == DType::f16 ? static_cast<f16*>(copy) : nullptr;
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    adamw_element(param + i, m + i, v + i, grad[i] * scale, hp.lr, hp.beta1, hp.beta2, hp.eps,
                  hp.weight_decay, correction1, correction2);
    if (to_bf16_copy) to_bf16_copy[i] = to_bf16(param[i]);
    if (to_f16_copy) to_f16_copy[i] = to_f16(param[i]);
  }
}

}  // namespace sg::cpu
