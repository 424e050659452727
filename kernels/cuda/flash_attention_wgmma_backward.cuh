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

// A dQ block: 64 queries from q0 (this warp's 16 from w0), key tiles
// streaming through `Slots` slots of shared memory (K then V, 16 KiB a
// slot; key tile k0 / 64 in slot (k0 / 64) % Slots), then the block's Q and
// dO rows. Constructing it starts the first group: Q, dO and key tile 0.
template <typename T, int Slots>
struct DqBlock {
  static constexpr size_t kSharedBytes = (2 * Slots + 2) * kCoreTileElements * sizeof(T);
  T* tiles;
  T* q_tile;
  T* do_tile;
  int64_t head_offset, q0, w0;  // head_offset: of the head's columns in qkv (and dqkv)
  const T* base;                // qkv + head_offset
  const T* do_base;

  __device__ DqBlock(unsigned char* shared, const T* qkv, const T* dout, const TcDims& d)
      : DqBlock(shared, qkv, dout, d, head_rows<kWgmmaHeadSize>(d, true)) {}
  __device__ DqBlock(unsigned char* shared, const T* qkv, const T* dout, const TcDims& d, const HeadRows& rows)
      : tiles(reinterpret_cast<T*>(shared)),
        q_tile(tiles + 2 * Slots * kCoreTileElements),
        do_tile(q_tile + kCoreTileElements),
        head_offset(rows.qkv_offset),
        q0(rows.first),
        w0(rows.warp_first),
        base(qkv + head_offset),
        do_base(dout + rows.out_offset) {
    fetch_core_tile(q_tile, base, 3 * d.C, q0, d.T);  // in the first tiles' group
    fetch_core_tile(do_tile, do_base, d.C, q0, d.T);
    fetch_keys(0, d);
  }

  __device__ const T* k_tile(int64_t k0) const { return tiles + 2 * (int(k0 / kTile) % Slots) * kCoreTileElements; }
  __device__ void fetch_keys(int64_t k0, const TcDims& d) const {
    fetch_core_keys_values(tiles, int(k0 / kTile) % Slots, base, d.C, k0, d.T);
  }
  __device__ int64_t last_key(const TcDims& d) const { return min(d.T - 1, q0 + kRows - 1); }
  // Key tile k0 has landed (visible to wgmma, every thread past the
  // barrier); the next one's copies start, into a slot no product still reads.
  __device__ void start_keys(int64_t k0, const TcDims& d) const {
    async_wait<0>();
    fence_shared_for_wgmma();
    __syncthreads();
    if (k0 + kTile <= last_key(d)) fetch_keys(k0 + kTile, d);
  }
  __device__ void write(T* dqkv, const float (&dq)[kWgmmaHeadSize / 8][4], const TcDims& d) const {
    const float one[2] = {1.0f, 1.0f};
    write_rows<T, kWgmmaHeadSize>(dqkv + head_offset, 3 * d.C, dq, w0, d.T, one);
  }
};

// A dK/dV block: 64 keys from k0 (this warp's 16 from w0), query tiles
// streaming through `Slots` slots (Q then dO, 16 KiB a slot; the tile at q0
// in slot ((q0 - k0) / 64) % Slots), the block's K and V rows, then each
// slot's 64 lse and 64 D. Constructing it starts the first group: K, V and
// the first query tile (q0 = k0: the causal mask hides earlier ones).
template <typename T, int Slots>
struct DkdvBlock {
  static constexpr size_t kSharedBytes =
      (2 * Slots + 2) * kCoreTileElements * sizeof(T) + 2 * Slots * kTile * sizeof(float);
  T* tiles;
  T* k_rows;
  T* v_rows;
  float* row_values;
  int64_t head_offset, k0, w0;
  const T* base;
  const T* do_base;
  const float* lse;  // the head's rows of lse and D
  const float* D;

  __device__ DkdvBlock(unsigned char* shared, const T* qkv, const T* dout, const float* lse_all,
                       const float* D_all, const TcDims& d)
      : DkdvBlock(shared, qkv, dout, lse_all, D_all, d, head_rows<kWgmmaHeadSize>(d, false)) {}
  __device__ DkdvBlock(unsigned char* shared, const T* qkv, const T* dout, const float* lse_all,
                       const float* D_all, const TcDims& d, const HeadRows& rows)
      : tiles(reinterpret_cast<T*>(shared)),
        k_rows(tiles + 2 * Slots * kCoreTileElements),
        v_rows(k_rows + kCoreTileElements),
        row_values(reinterpret_cast<float*>(v_rows + kCoreTileElements)),
        head_offset(rows.qkv_offset),
        k0(rows.first),
        w0(rows.warp_first),
        base(qkv + head_offset),
        do_base(dout + rows.out_offset),
        lse(lse_all + blockIdx.x * d.T),
        D(D_all + blockIdx.x * d.T) {
    fetch_core_tile(k_rows, base + d.C, 3 * d.C, k0, d.T);  // in the first tiles' group
    fetch_core_tile(v_rows, base + 2 * d.C, 3 * d.C, k0, d.T);
    fetch_queries(k0, d);
  }

  __device__ int slot(int64_t q0) const { return int((q0 - k0) / kTile) % Slots; }
  __device__ const T* q_tile(int64_t q0) const { return tiles + 2 * slot(q0) * kCoreTileElements; }
  __device__ const float* row_lse(int64_t q0) const { return row_values + 2 * slot(q0) * kTile; }  // D: + kTile
  // The query tile at q0 has landed (visible to wgmma, every thread past the
  // barrier); the next one's copies start, into a slot no product still reads.
  __device__ void start_queries(int64_t q0, const TcDims& d) const {
    async_wait<0>();
    fence_shared_for_wgmma();
    __syncthreads();
    if (q0 + kTile < d.T) fetch_queries(q0 + kTile, d);
  }
  // Q, dO and the queries' lse and D of the tile at q0, as one group.
  __device__ void fetch_queries(int64_t q0, const TcDims& d) const {
    T* q = tiles + 2 * slot(q0) * kCoreTileElements;
    fetch_core_tile(q, base, 3 * d.C, q0, d.T);
    fetch_core_tile(q + kCoreTileElements, do_base, d.C, q0, d.T);
    fetch_row_values(row_values + 2 * slot(q0) * kTile, lse, q0, d.T);
    fetch_row_values(row_values + (2 * slot(q0) + 1) * kTile, D, q0, d.T);
    async_commit();
  }
  __device__ void write(T* dqkv, const float (&dk)[kWgmmaHeadSize / 8][4], const float (&dv)[kWgmmaHeadSize / 8][4],
                        const TcDims& d) const {
    const float one[2] = {1.0f, 1.0f};
    write_rows<T, kWgmmaHeadSize>(dqkv + head_offset + d.C, 3 * d.C, dk, w0, d.T, one);
    write_rows<T, kWgmmaHeadSize>(dqkv + head_offset + 2 * d.C, 3 * d.C, dv, w0, d.T, one);
  }
};

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

// The same, fenced, committed and waited for, its registers held across.
template <typename T>
__device__ __forceinline__ void run_dq_product(float (&dq_flat)[4 * kWgmmaHeadSize / 8],
                                               uint32_t (&ds)[kTile / 16][4], const T* k_tile) {
  uint32_t(&ds_flat)[kTile / 4] = reinterpret_cast<uint32_t(&)[kTile / 4]>(ds);
  wgmma_fence();
  issue_dq_product(dq_flat, ds, k_tile);
  wgmma_commit();
  wgmma_wait<0>();
  hold_registers(dq_flat);
  hold_registers(ds_flat);
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

// The same, fenced, committed and waited for, its registers held across.
template <typename T>
__device__ __forceinline__ void run_dkdv_products(float (&dv_flat)[4 * kWgmmaHeadSize / 8],
                                                  float (&dk_flat)[4 * kWgmmaHeadSize / 8],
                                                  uint32_t (&p)[kHalfTile / 16][4], uint32_t (&ds)[kHalfTile / 16][4],
                                                  const T* q_tile, const T* do_tile, int c0) {
  uint32_t(&p_flat)[kHalfTile / 4] = reinterpret_cast<uint32_t(&)[kHalfTile / 4]>(p);
  uint32_t(&ds_flat)[kHalfTile / 4] = reinterpret_cast<uint32_t(&)[kHalfTile / 4]>(ds);
  wgmma_fence();
  issue_dkdv_products(dv_flat, dk_flat, p, ds, q_tile, do_tile, c0);
  wgmma_commit();
  wgmma_wait<0>();
  hold_registers(dv_flat);
  hold_registers(dk_flat);
  hold_registers(p_flat);
  hold_registers(ds_flat);
}

}  // namespace

// The overlapped backward's two kernels, dQ (and D) then dK/dV, on `stream`
// (flash_attention_wgmma_backward_overlapped.cu).
// (Plain sizes: TcDims lives in an anonymous namespace, one per file.)
void launch_wgmma_backward_overlapped(void* dqkv, float* row_dots, const void* dout, const void* qkv,
                                      const void* out, const float* lse, int64_t B, int64_t T, int64_t C,
                                      int64_t NH, DType dtype, cudaStream_t stream);

}  // namespace sg::cuda
