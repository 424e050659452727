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
#include <limits>

#include "kernels/host_device.h"

namespace sg {

struct AdamWParams {
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;
  // When set, the scale is read from here instead, at the update: a float
  // on the parameters' device (clip_grad_factor's), so the host need not
  // wait for the gradient norm before queuing the update. A NaN there skips
  // the update (fp16's overflowed step: clip_grad_factor_or_skip).
  const float* grad_scale_at = nullptr;
  int64_t step = 1;  // 1 for the first update

  // The scale to apply (read by the kernels, where grad_scale_at points).
  SG_HOST_DEVICE float scale() const { return grad_scale_at != nullptr ? *grad_scale_at : grad_scale; }
  // Whether the scale says "skip this step": nothing is written.
  SG_HOST_DEVICE static bool skips(float scale) { return scale != scale; }

  // Bias corrections depend only on the step: computed once per update, in double.
  float bias_correction1() const { return float(1.0 - std::pow(double(beta1), double(step))); }
  float bias_correction2() const { return float(1.0 - std::pow(double(beta2), double(step))); }
};

// An overflow: the gradients' norm (the square root of their squares' sum,
// over the loss scale they carry) is inf or NaN.
SG_HOST_DEVICE inline bool gradients_overflowed(double squares, double loss_scale) {
  return !(sqrt(squares) / loss_scale <= std::numeric_limits<double>::max());
}

// What AdamW multiplies each gradient by after clipping to a global norm
// (PyTorch's clip_grad_norm_, DeepSpeed's gradient_clipping): the norm of
// the gradients as they stand (sqrt of their squares' sum) over the loss
// scale (fp16; 1 otherwise) is the true norm; it is clipped to max_norm
// (max_norm <= 0: not clipped), and the loss scale divided out. An inf or
// NaN norm gives 1: fp16 skips that step, and otherwise the NaN goes on into
// the update, as in PyTorch. In double, on the host or (so the host need not
// read the norm) in a one-thread kernel: the same bits either way.
SG_HOST_DEVICE inline double clip_grad_factor(double squares, double loss_scale, double max_norm) {
  if (gradients_overflowed(squares, loss_scale)) return 1.0;
  const double norm = sqrt(squares) / loss_scale;
  const double clip = max_norm > 0 ? fmin(1.0, max_norm / (norm + 1e-6)) : 1.0;
  return clip / loss_scale;
}

// fp16 on a GPU: the same factor, but an overflow (inf or NaN norm) gives
// NaN, which makes AdamW skip the update (AdamWParams::skips) on the device.
// The host learns of the overflow later, when it reads the norm, and only
// then updates the loss scaler (optim/zero.cpp): no wait in mid-step.
SG_HOST_DEVICE inline double clip_grad_factor_or_skip(double squares, double loss_scale, double max_norm) {
  if (gradients_overflowed(squares, loss_scale)) return std::numeric_limits<double>::quiet_NaN();
  return clip_grad_factor(squares, loss_scale, max_norm);
}

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
