// The fused attention backward on Hopper's warpgroup MMA (SG_FLASH_WGMMA=1,
// head size 64; see flash_attention_wgmma.cu for the forward, the tile
// layout and why): the mma.sync backward's two kernels (flash_attention_tc.cu),
// dQ first (it writes D = rowsum(dO * O)), then dK and dV, with every
// product a wgmma. Built for sm_90a alone. Not yet run on a GPU.
//
//   dQ, a block 64 queries, key tiles streaming by:
//     S = Q K^T, dP = dO V^T (eight wgmma, Q, dO, K and V in shared memory),
//     P = exp(S scale - lse), dS = P (dP - D) scale (registers),
//     dQ += dS K (four wgmma, dS from registers, K read N-major).
//   dK, dV, a block 64 keys, query tiles streaming by, 32 queries at a time
//   (the scores of 64 would take 32 registers more, each):
//     S^T = K Q^T, dP^T = V dO^T (wgmma m64n32k16, K and V the block's rows),
//     P^T, dS^T (registers), dV += P^T dO, dK += dS^T Q (dO and Q read N-major).
// As in the mma.sync kernels every output element has one writer: no
// atomics, and the same bits every run. These kernels' products wait for
// each other; by default (SG_FLASH_WGMMA_OVERLAP) the backward takes the
// kernels whose products overlap the exponentials instead:
// flash_attention_wgmma_backward_overlapped.cu.
#include <atomic>

#include "kernels/cuda/flash_attention_tc.h"
#include "kernels/cuda/flash_attention_wgmma_backward.cuh"

namespace sg::cuda {
namespace {

template <typename T>
__global__ void __launch_bounds__(kBlockThreads, 3)
    flash_backward_dq_wgmma_kernel(T* dqkv, float* D, const T* dout, const T* qkv, const T* out, const float* lse,
                                   TcDims d) {
  constexpr int HS = kWgmmaHeadSize;
  // Two buffers of a K tile and a V tile each, then the block's Q rows and dO rows.
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  T* tiles = reinterpret_cast<T*>(shared_bytes);
  T* q_tile = tiles + 4 * kCoreTileElements;
  T* do_tile = q_tile + kCoreTileElements;
  const int warp = threadIdx.x / 32;
  const int64_t b = blockIdx.x / d.NH, h = blockIdx.x % d.NH, row_stride = 3 * d.C;
  const T* base = qkv + b * d.T * row_stride + h * HS;
  const T* do_base = dout + b * d.T * d.C + h * HS;
  const int64_t q0 = int64_t(gridDim.y - 1 - blockIdx.y) * kRows, w0 = q0 + 16 * warp;
  fetch_core_tile(q_tile, base, row_stride, q0, d.T);  // in the first tiles' group
  fetch_core_tile(do_tile, do_base, d.C, q0, d.T);
  fetch_core_keys_values(tiles, 0, base, d.C, 0, d.T);

  float row_lse[2], row_d[2];  // rows g and g + 8: lse in log2 units, D
  dq_row_values<T>(row_lse, row_d, D, do_base, out, lse, w0, d);
  float dq[HS / 8][4] = {};
  float(&dq_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dq);
  const int64_t block_last = min(d.T - 1, q0 + kRows - 1);
  int buffer = 0;
  for (int64_t k0 = 0; k0 <= block_last; k0 += kTile, buffer ^= 1) {
    async_wait<0>();  // as the forward's loop
    fence_shared_for_wgmma();
    __syncthreads();
    if (k0 + kTile <= block_last) fetch_core_keys_values(tiles, buffer ^ 1, base, d.C, k0 + kTile, d.T);
    const T* k_tile = tiles + 2 * buffer * kCoreTileElements;
    const T* v_tile = k_tile + kCoreTileElements;

    float s[kTileBlocks][4], dp[kTileBlocks][4];
    float(&s_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(s);
    float(&dp_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(dp);
    wgmma_fence();
    issue_dq_scores(s_flat, dp_flat, q_tile, do_tile, k_tile, v_tile);
    wgmma_commit();
    wgmma_wait<0>();
    hold_registers(s_flat);
    hold_registers(dp_flat);

    uint32_t ds[kTile / 16][4];  // all four before the first product: an in-flight wgmma owns its A registers
    dq_ds_in_place(s, dp, k0, w0, row_lse, row_d, d);
    pack_a_fragments<T>(ds, dp);
    uint32_t(&ds_flat)[kTile / 4] = reinterpret_cast<uint32_t(&)[kTile / 4]>(ds);
    hold_registers(ds_flat);
    hold_registers(dq_flat);
    wgmma_fence();
    issue_dq_product(dq_flat, ds, k_tile);
    wgmma_commit();
    wgmma_wait<0>();
    hold_registers(dq_flat);
    hold_registers(ds_flat);
  }
  const float one[2] = {1.0f, 1.0f};
  write_rows<T, HS>(dqkv + b * d.T * row_stride + h * HS, row_stride, dq, w0, d.T, one);
}

// The products of 32 queries (c0.. of the tile at q0) and the block's keys,
// added to dK and dV: this warp's keys w0..w0 + 15 and the tile's lse and D
// (natural-log units) in row_lse and row_d.
template <typename T>
__device__ __forceinline__ void dkdv_half_tile(float (&dk_flat)[32], float (&dv_flat)[32], const T* k_rows,
                                               const T* v_rows, const T* q_tile, const T* do_tile,
                                               const float* row_lse, const float* row_d, int c0, int64_t q0,
                                               int64_t w0, const TcDims& d) {
  float st[kHalfTile / 8][4], dpt[kHalfTile / 8][4];  // S^T and dP^T: (16 keys, 32 queries) a warp
  float(&st_flat)[kHalfTile / 2] = reinterpret_cast<float(&)[kHalfTile / 2]>(st);
  float(&dpt_flat)[kHalfTile / 2] = reinterpret_cast<float(&)[kHalfTile / 2]>(dpt);
  wgmma_fence();
  issue_dkdv_scores(st_flat, dpt_flat, k_rows, v_rows, q_tile, do_tile, c0);
  wgmma_commit();
  wgmma_wait<0>();
  hold_registers(st_flat);
  hold_registers(dpt_flat);

  uint32_t p[kHalfTile / 16][4], ds[kHalfTile / 16][4];  // all built before the first product
  dkdv_probabilities_in_place(st, dpt, row_lse, row_d, c0, q0, w0, d);
  pack_a_fragments<T>(p, st);
  pack_a_fragments<T>(ds, dpt);
  uint32_t(&p_flat)[kHalfTile / 4] = reinterpret_cast<uint32_t(&)[kHalfTile / 4]>(p);
  uint32_t(&ds_flat)[kHalfTile / 4] = reinterpret_cast<uint32_t(&)[kHalfTile / 4]>(ds);
  hold_registers(p_flat);
  hold_registers(ds_flat);
  hold_registers(dv_flat);
  hold_registers(dk_flat);
  wgmma_fence();
  issue_dkdv_products(dv_flat, dk_flat, p, ds, q_tile, do_tile, c0);
  wgmma_commit();
  wgmma_wait<0>();
  hold_registers(dv_flat);
  hold_registers(dk_flat);
  hold_registers(p_flat);
  hold_registers(ds_flat);
}

template <typename T>
__global__ void __launch_bounds__(kBlockThreads, 3)
    flash_backward_dkdv_wgmma_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D,
                                     TcDims d) {
  constexpr int HS = kWgmmaHeadSize;
  // Two buffers of a Q tile and a dO tile each, the block's K rows and V rows, then two buffers of the
  // 64 queries' lse and D.
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  T* tiles = reinterpret_cast<T*>(shared_bytes);
  T* k_rows = tiles + 4 * kCoreTileElements;
  T* v_rows = k_rows + kCoreTileElements;
  float* row_values = reinterpret_cast<float*>(v_rows + kCoreTileElements);
  const int warp = threadIdx.x / 32;
  const int64_t b = blockIdx.x / d.NH, h = blockIdx.x % d.NH, row_stride = 3 * d.C;
  const T* base = qkv + b * d.T * row_stride + h * HS;
  const T* do_base = dout + b * d.T * d.C + h * HS;
  const int64_t k0 = int64_t(blockIdx.y) * kRows, w0 = k0 + 16 * warp;  // the first blocks see the most queries
  auto fetch = [&](int64_t q0, int buffer) {  // Q, dO and the queries' lse and D
    T* q_tile = tiles + 2 * buffer * kCoreTileElements;
    fetch_core_tile(q_tile, base, row_stride, q0, d.T);
    fetch_core_tile(q_tile + kCoreTileElements, do_base, d.C, q0, d.T);
    fetch_row_values(row_values + 2 * buffer * kTile, lse + blockIdx.x * d.T, q0, d.T);
    fetch_row_values(row_values + (2 * buffer + 1) * kTile, D + blockIdx.x * d.T, q0, d.T);
    async_commit();
  };
  fetch_core_tile(k_rows, base + d.C, row_stride, k0, d.T);  // in the first tiles' group
  fetch_core_tile(v_rows, base + 2 * d.C, row_stride, k0, d.T);
  fetch(k0, 0);

  float dk[HS / 8][4] = {}, dv[HS / 8][4] = {};
  float(&dk_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dk);
  float(&dv_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dv);
  int buffer = 0;
  for (int64_t q0 = k0; q0 < d.T; q0 += kTile, buffer ^= 1) {
    async_wait<0>();  // as the forward's loop
    fence_shared_for_wgmma();
    __syncthreads();
    if (q0 + kTile < d.T) fetch(q0 + kTile, buffer ^ 1);
    const T* q_tile = tiles + 2 * buffer * kCoreTileElements;
    const float* row_lse = row_values + 2 * buffer * kTile;
#pragma unroll 1
    for (int c0 = 0; c0 < kTile && q0 + c0 < d.T; c0 += kHalfTile) {  // the same for the whole warpgroup
      dkdv_half_tile<T>(dk_flat, dv_flat, k_rows, v_rows, q_tile, q_tile + kCoreTileElements, row_lse,
                        row_lse + kTile, c0, q0, w0, d);
    }
  }
  const float one[2] = {1.0f, 1.0f};
  T* rows = dqkv + b * d.T * row_stride + h * HS;
  write_rows<T, HS>(rows + d.C, row_stride, dk, w0, d.T, one);
  write_rows<T, HS>(rows + 2 * d.C, row_stride, dv, w0, d.T, one);
}

constexpr size_t kDqSharedBytes = 6 * kCoreTileElements * 2;  // two buffers of K and V, and Q and dO
constexpr size_t kDkdvSharedBytes = 6 * kCoreTileElements * 2 + 4 * kTile * sizeof(float);
static_assert(kDqSharedBytes <= 48 * 1024, "the wgmma dQ kernel needs more than 48 KiB of shared memory");
static_assert(3 * kDkdvSharedBytes <= 227 * 1024, "the wgmma dK/dV kernel no longer fits 3 blocks an SM");

std::atomic<int64_t> g_wgmma_backwards{0};  // flash_wgmma_backwards

template <typename T>
void launch_backward(T* dqkv, float* row_dots, const T* dout, const T* qkv, const T* out, const float* lse,
                     const dim3& grid, const TcDims& d, cudaStream_t stream) {
  // dQ first: it writes D (row_dots), which dK/dV reads.
  flash_backward_dq_wgmma_kernel<T><<<grid, kBlockThreads, kDqSharedBytes, stream>>>(dqkv, row_dots, dout, qkv, out,
                                                                                      lse, d);
  SG_CHECK_LAUNCH();
  // 49 KiB: over the 48 a launch may ask for without opting in.
  CUDA_CHECK(cudaFuncSetAttribute(flash_backward_dkdv_wgmma_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  int(kDkdvSharedBytes)));
  flash_backward_dkdv_wgmma_kernel<T><<<grid, kBlockThreads, kDkdvSharedBytes, stream>>>(dqkv, dout, qkv, lse,
                                                                                          row_dots, d);
  SG_CHECK_LAUNCH();
}

}  // namespace

bool flash_backward_wgmma(void* dqkv, float* row_dots, const void* dout, const void* qkv, const void* out,
                          const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype,
                          cudaStream_t stream) {
  if (!wgmma_attention_applies(C, NH, dtype)) return false;
  const TcDims d{T, C, NH, 1.0f / sqrtf(float(kWgmmaHeadSize))};
  if (env_switch_on("SG_FLASH_WGMMA_OVERLAP")) {
    launch_wgmma_backward_overlapped(dqkv, row_dots, dout, qkv, out, lse, B, T, C, NH, dtype, stream);
  } else {
    with_half_type(dtype, [&](auto tag) {
      using Ty = decltype(tag);
      launch_backward(static_cast<Ty*>(dqkv), row_dots, static_cast<const Ty*>(dout), static_cast<const Ty*>(qkv),
                      static_cast<const Ty*>(out), lse, grid_for(B, T, NH), d, stream);
    });
  }
  g_wgmma_backwards.fetch_add(1, std::memory_order_relaxed);
  return true;
}

int64_t flash_wgmma_backwards() { return g_wgmma_backwards.load(std::memory_order_relaxed); }

}  // namespace sg::cuda
