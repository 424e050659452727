// CPU causal self-attention, the reference ("naive") form that materializes
// the (T, T) attention matrix per head. Fused kernels must match this one.
//
// Layout follows GPT-2's c_attn output: qkv is (B, T, 3C), each token's row
// holding [q | k | v], and head h owning channels [h*HS, (h+1)*HS) of each,
// with HS = C / NH. So no transposes are needed to split heads.
//
// Read next: kernels/cpu/loss.h.
#pragma once

#include <cstdint>

namespace sg::cpu {

// For each batch b, head h and query position t:
//   att[b,h,t,s] = softmax_s( q_t . k_s / sqrt(HS) ) for s <= t, 0 for s > t (causal mask)
//   out[b,t,h*HS:(h+1)*HS] = sum_s att[b,h,t,s] v_s
// out: (B, T, C)   att: (B, NH, T, T), saved for backward   qkv: (B, T, 3C)
template <typename Real>  // float or double
void attention_forward(Real* out, Real* att, const Real* qkv, int64_t B, int64_t T, int64_t C,
                       int64_t NH);

// Backward, accumulating into dqkv (B, T, 3C). With P = att and dO = dout:
//   dV = P^T dO,   dP = dO V^T,   dS = P * (dP - rowsum(dP * P))   (softmax backward)
//   dQ = dS K / sqrt(HS),   dK = dS^T Q / sqrt(HS)
// Masked entries have P = 0, so they contribute nothing and need no special case.
template <typename Real>  // float or double
void attention_backward(Real* dqkv, const Real* dout, const Real* qkv, const Real* att, int64_t B,
                        int64_t T, int64_t C, int64_t NH);

}  // namespace sg::cpu
