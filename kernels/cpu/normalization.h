// CPU LayerNorm and softmax over the last dimension of a (N, C) buffer.
//
// Read next: kernels/cpu/attention.h.
#pragma once

#include <cstdint>

namespace sg::cpu {

constexpr float kLayerNormEps = 1e-5f;  // PyTorch's and GPT-2's default

// LayerNorm of each row:  y = (x - mean) * rstd * weight + bias,
// rstd = 1 / sqrt(var + eps) with the biased variance. mean and rstd (N) are
// saved for the backward pass.
void layernorm_forward(float* out, float* mean, float* rstd, const float* in, const float* weight,
                       const float* bias, int64_t N, int64_t C);

// With xhat = (x - mean) * rstd and dxhat = dy * weight:
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//   dweight += sum over rows of dy * xhat,  dbias += sum over rows of dy
// All three outputs accumulate (+=).
void layernorm_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C);

// y_j = exp(x_j - max x) / sum_k exp(x_k - max x), per row. Subtracting the
// max changes nothing mathematically and keeps exp from overflowing.
void softmax_forward(float* out, const float* in, int64_t N, int64_t C);

// dx_j += y_j * (dy_j - sum_k dy_k y_k)   (the softmax Jacobian applied to dy)
void softmax_backward(float* din, const float* out, const float* dout, int64_t N, int64_t C);

}  // namespace sg::cpu
