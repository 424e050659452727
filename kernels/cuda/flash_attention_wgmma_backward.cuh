// Internal to kernels/cuda/flash_attention_wgmma_backward*.cu: the steps of
// attention's backward on wgmma, shared by the kernels whose products wait
// for each other (flash_attention_wgmma_backward.cu) and those whose
// products overlap the exponentials (flash_attention_wgmma_backward_overlapped.cu).
// "issue" functions issue wgmma without fencing, committing or waiting:
// the kernels own the order.
#pragma once

#include "kernels/cuda/flash_attention_wgmma_tiles.cuh"

namespace sg::cuda {
namespace {

constexpr int kHalfTile = kTile / 2;  // the queries dK/dV takes at a time

// The dQ kernels' rows (this warp's 16 from w0): lse (log2 units) and D =
// rowsum(dO * O), which they also write for dK/dV.
template <typename T>
__device__ __forceinline__ void dq_row_values(float (&row_lse)[2], float (&row_d)[2], float* D, const T* do_base,
                                              const T* out, const float* lse, int64_t w0, const TcDims& d) {
  uint32_t d_o[kWgmmaHeadSize / 16][4];
  load_a_rows<kWgmmaHeadSize>(d_o, do_base, d.C, w0, d.T);
  write_row_dots<T, kWgmmaHeadSize>(row_d, D, d_o, out, w0, d);
  load_row_lse(row_lse, lse, w0, d);
}

// dQ's scores for one key tile: S = Q K^T into s, dP = dO V^T into dp,
// eight wgmma (Q, dO, K and V in shared memory).
template <typename T>
__device__ __forceinline__ void issue_dq_scores(float (&s_flat)[4 * kTileBlocks], float (&dp_flat)[4 * kTileBlocks],
                                                const T* q_tile, const T* do_tile, const T* k_tile,
                                                const T* v_tile) {
#pragma unroll
  for (int kk = 0; kk < kWgmmaHeadSize / 16; ++kk) {
    wgmma_ss<T, 64>(s_flat, k_major(q_tile, kk), k_major(k_tile, kk), kk > 0);
  }
#pragma unroll
  for (int kk = 0; kk < kWgmmaHeadSize / 16; ++kk) {
    wgmma_ss<T, 64>(dp_flat, k_major(do_tile, kk), k_major(v_tile, kk), kk > 0);
  }
}

// Rounds blocks 2 kk and 2 kk + 1 of 16-column accumulators to 16 bits as
// A fragment kk (mma.sync's, which wgmma takes from registers).
template <typename T, int Blocks>
__device__ __forceinline__ void pack_a_fragments(uint32_t (&a)[Blocks / 2][4], const float (&x)[Blocks][4]) {
#pragma unroll
  for (int kk = 0; kk < Blocks / 2; ++kk) a_of_pair<T>(a[kk], x[2 * kk], x[2 * kk + 1]);
}

// dS = P (dP - D) scale in place of dP, with P = exp(S scale - lse) (0 for
// a key the row does not see). row_lse in log2 units, row_d: rows g and
// g + 8 of this warp's 16 from w0.
__device__ __forceinline__ void dq_ds_in_place(const float (&s)[kTileBlocks][4], float (&dp)[kTileBlocks][4],
                                               int64_t k0, int64_t w0, const float (&row_lse)[2],
                                               const float (&row_d)[2], const TcDims& d) {
  const bool masked = tile_masked(k0, w0, d.T);
  const float scale_log2 = d.scale * kLog2e;
#pragma unroll
  for (int nb = 0; nb < kTileBlocks; ++nb) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float p = !masked || key_visible(k0, w0, nb, i, d.T) ? fast_exp2(s[nb][i] * scale_log2 - row_lse[i / 2])
                                                                 : 0.0f;
      dp[nb][i] = p * (dp[nb][i] - row_d[i / 2]) * d.scale;
    }
  }
}

// dQ += dS K: four wgmma, dS from registers, K read N-major.
template <typename T>
__device__ __forceinline__ void issue_dq_product(float (&dq_flat)[4 * kWgmmaHeadSize / 8],
                                                 const uint32_t (&ds)[kTile / 16][4], const T* k_tile) {
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) wgmma_rs_n_major<T>(dq_flat, ds[kk], n_major(k_tile, kk), true);
}

// dK/dV's scores for 32 queries (c0.. of the query tile) against the
// block's 64 keys: S^T = K Q^T into st, dP^T = V dO^T into dpt (m64n32k16).
template <typename T>
__device__ __forceinline__ void issue_dkdv_scores(float (&st_flat)[kHalfTile / 2], float (&dpt_flat)[kHalfTile / 2],
                                                  const T* k_rows, const T* v_rows, const T* q_tile,
                                                  const T* do_tile, int c0) {
#pragma unroll
  for (int kk = 0; kk < kWgmmaHeadSize / 16; ++kk) {
    wgmma_ss<T, 32>(st_flat, k_major(k_rows, kk), k_major(q_tile, kk, c0), kk > 0);
  }
#pragma unroll
  for (int kk = 0; kk < kWgmmaHeadSize / 16; ++kk) {
    wgmma_ss<T, 32>(dpt_flat, k_major(v_rows, kk), k_major(do_tile, kk, c0), kk > 0);
  }
}

// P^T in place of S^T and dS^T in place of dP^T (this warp's keys from w0,
// the queries q0 + c0..; the tile's lse and D in natural-log units, from
// shared memory).
__device__ __forceinline__ void dkdv_probabilities_in_place(float (&st)[kHalfTile / 8][4],
                                                            float (&dpt)[kHalfTile / 8][4], const float* row_lse,
                                                            const float* row_d, int c0, int64_t q0, int64_t w0,
                                                            const TcDims& d) {
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
  const float scale_log2 = d.scale * kLog2e;
#pragma unroll
  for (int nb = 0; nb < kHalfTile / 8; ++nb) {
    const int first = c0 + 8 * nb + 2 * t;  // this lane's columns (queries of the tile): first, first + 1
    const float2 lse_pair = *reinterpret_cast<const float2*>(row_lse + first);
    const float2 d_pair = *reinterpret_cast<const float2*>(row_d + first);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t query = q0 + first + (i & 1), key = w0 + g + (i >= 2 ? 8 : 0);
      const bool visible = query >= key && query < d.T;
      st[nb][i] = visible ? fast_exp2(st[nb][i] * scale_log2 - ((i & 1) ? lse_pair.y : lse_pair.x) * kLog2e) : 0.0f;
      dpt[nb][i] = st[nb][i] * (dpt[nb][i] - ((i & 1) ? d_pair.y : d_pair.x)) * d.scale;
    }
  }
}

// dV += P^T dO and dK += dS^T Q for those 32 queries (dO and Q read N-major).
template <typename T>
__device__ __forceinline__ void issue_dkdv_products(float (&dv_flat)[4 * kWgmmaHeadSize / 8],
                                                    float (&dk_flat)[4 * kWgmmaHeadSize / 8],
                                                    const uint32_t (&p)[kHalfTile / 16][4],
                                                    const uint32_t (&ds)[kHalfTile / 16][4], const T* q_tile,
                                                    const T* do_tile, int c0) {
#pragma unroll
  for (int kk = 0; kk < kHalfTile / 16; ++kk) wgmma_rs_n_major<T>(dv_flat, p[kk], n_major(do_tile, c0 / 16 + kk), true);
#pragma unroll
  for (int kk = 0; kk < kHalfTile / 16; ++kk) wgmma_rs_n_major<T>(dk_flat, ds[kk], n_major(q_tile, c0 / 16 + kk), true);
}

}  // namespace

// The overlapped backward's two kernels, dQ (and D) then dK/dV, on `stream`
// (flash_attention_wgmma_backward_overlapped.cu).
// (Plain sizes: TcDims lives in an anonymous namespace, one per file.)
void launch_wgmma_backward_overlapped(void* dqkv, float* row_dots, const void* dout, const void* qkv,
                                      const void* out, const float* lse, int64_t B, int64_t T, int64_t C,
                                      int64_t NH, DType dtype, cudaStream_t stream);

}  // namespace sg::cuda
