// CPU LayerNorm and softmax over the last dimension of a (N, C) buffer, for
// T = float and T = double (f64 gradient checks).
//
// Read next: kernels/cpu/attention.h.
#pragma once

#include <cstdint>

namespace sg::cpu {

constexpr float kLayerNormEps = 1e-5f;  // PyTorch's and GPT-2's default

// LayerNorm of each row:  y = (x - mean) * rstd * weight + bias,
// rstd = 1 / sqrt(var + eps) with the biased variance. mean and rstd (N) are
// saved for the backward pass.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* weight,
                       const T* bias, int64_t N, int64_t C);

// With xhat = (x - mean) * rstd and dxhat = dy * weight:
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//   dweight += sum over rows of dy * xhat,  dbias += sum over rows of dy
// All three outputs accumulate (+=).
template <typename T>
void layernorm_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in,
                        const T* weight, const T* mean, const T* rstd, int64_t N, int64_t C);

// y_j = exp(x_j - max x) / sum_k exp(x_k - max x), per row. Subtracting the
// max changes nothing mathematically and keeps exp from overflowing.
template <typename T>
void softmax_forward(T* out, const T* in, int64_t N, int64_t C);

// dx_j += y_j * (dy_j - sum_k dy_k y_k)   (the softmax Jacobian applied to dy)
template <typename T>
void softmax_backward(T* din, const T* out, const T* dout, int64_t N, int64_t C);

// Attention's softmax over scores (N, T) whose row r belongs to query
// t = r % T: y_s = softmax over s <= t of scale * x_s, and 0 for s > t (the
// causal mask). Backward writes (not adds) dx = scale * y * (dy - sum_s dy_s y_s).
template <typename T>
void causal_softmax_forward(T* out, const T* in, int64_t N, int64_t T_, T scale);
template <typename T>
void causal_softmax_backward(T* din, const T* out, const T* dout, int64_t N, int64_t T_, T scale);

}  // namespace sg::cpu
