// Fused ("flash") causal self-attention: the same function as
// kernels/cpu/attention.h, computed without the (T, T) attention matrix.
//
// Forward keeps, per query row, only the running max m, the running sum of
// exponentials l and the running weighted sum of values o (the online
// softmax): a new key with score s updates
//   m' = max(m, s),  l' = l e^(m - m') + e^(s - m'),  o' = o e^(m - m') + e^(s - m') v
// and at the end out = o / l. It saves lse = m + log l per row (B, NH, T)
// instead of the matrix: O(T) memory instead of O(T^2).
//
// Backward recomputes each probability from the scores and lse,
//   p_ts = exp(q_t . k_s / sqrt(HS) - lse_t),
// and with D_t = dO_t . O_t (which equals rowsum(dP * P) of the naive form):
//   dV_s += p_ts dO_t,  dS_ts = p_ts (dO_t . v_s - D_t),
//   dQ_t += dS_ts k_s / sqrt(HS),  dK_s += dS_ts q_t / sqrt(HS).
//
// This CPU version is the twin the CUDA kernels (kernels/cuda/flash_attention.h)
// are tested against, and the f64 reference for the backward rule's
// finite-difference test. On the CPU the GEMM form of attention.cpp is faster.
//
// Read next: kernels/cuda/flash_attention.h.
#pragma once

#include <cstdint>

namespace sg::cpu {

// out: (B, T, C)   lse: (B, NH, T)   qkv: (B, T, 3C) as in attention.h.
template <typename Real>  // float or double
void flash_attention_forward(Real* out, Real* lse, const Real* qkv, int64_t B, int64_t T, int64_t C, int64_t NH);

// Accumulates into dqkv (B, T, 3C); out and lse are what forward returned.
template <typename Real>  // float or double
void flash_attention_backward(Real* dqkv, const Real* dout, const Real* qkv, const Real* out, const Real* lse,
                              int64_t B, int64_t T, int64_t C, int64_t NH);

}  // namespace sg::cpu
