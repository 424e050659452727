// The AdamW update of one element, shared by the CPU and CUDA kernels so both
// run literally the same arithmetic (compiled by g++ and by nvcc).
//
// AdamW (Loshchilov & Hutter), PyTorch's form, step t counted from 1:
//   g  = grad * grad_scale                      (e.g. 1 / loss_scale)
//   p -= lr * weight_decay * p                  (decoupled weight decay)
//   m  = beta1 m + (1 - beta1) g
//   v  = beta2 v + (1 - beta2) g^2
//   p -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
//
// Read next: kernels/cpu/adamw.h.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/host_device.h"

namespace sg {

struct AdamWParams {
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;
  int64_t step = 1;  // 1 for the first update

  // Bias corrections depend only on the step: computed once per update, in double.
  float bias_correction1() const { return float(1.0 - std::pow(double(beta1), double(step))); }
  float bias_correction2() const { return float(1.0 - std::pow(double(beta2), double(step))); }
};

SG_HOST_DEVICE inline void adamw_element(float* param, float* m, float* v, float grad, float lr,
                                         float beta1, float beta2, float eps, float weight_decay,
                                         float correction1, float correction2) {
  float p = *param;
  p -= lr * weight_decay * p;
  float mi = beta1 * *m + (1.0f - beta1) * grad;
  float vi = beta2 * *v + (1.0f - beta2) * grad * grad;
  p -= lr * (mi / correction1) / (sqrtf(vi / correction2) + eps);
  *param = p;
  *m = mi;
  *v = vi;
}

}  // namespace sg
