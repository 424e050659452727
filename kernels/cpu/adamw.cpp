#include "kernels/cpu/adamw.h"

namespace sg::cpu {

void adamw_update(float* param, float* m, float* v, const float* grad, int64_t n, const AdamWParams& hp) {
  const float correction1 = hp.bias_correction1(), correction2 = hp.bias_correction2();
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    adamw_element(param + i, m + i, v + i, grad[i] * hp.grad_scale, hp.lr, hp.beta1, hp.beta2, hp.eps,
                  hp.weight_decay, correction1, correction2);
  }
}

}  // namespace sg::cpu
