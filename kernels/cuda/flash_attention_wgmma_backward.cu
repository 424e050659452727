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
__global__ void __launch_bounds__(kBlockThreads, 4)
    flash_backward_dq_wgmma_kernel(T* dqkv, float* D, const T* dout, const T* qkv, const T* out, const float* lse,
                                   TcDims d) {
  constexpr int HS = kWgmmaHeadSize;
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  const DqBlock<T, 2> block(shared_bytes, qkv, dout, d);  // key tiles in two slots: one computed on, one filling
  float row_lse[2], row_d[2];  // rows g and g + 8: lse in log2 units, D
  dq_row_values<T>(row_lse, row_d, D, block.do_base, out, lse, block.w0, d);
  float dq[HS / 8][4] = {};
  float(&dq_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dq);
  const int64_t block_last = block.last_key(d);
  for (int64_t k0 = 0; k0 <= block_last; k0 += kTile) {
    block.start_keys(k0, d);
    const T* k_tile = block.k_tile(k0);
    const T* v_tile = k_tile + kCoreTileElements;

    float s[kTileBlocks][4], dp[kTileBlocks][4];
    float(&s_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(s);
    float(&dp_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(dp);
    wgmma_fence();
    issue_dq_scores(s_flat, dp_flat, block.q_tile, block.do_tile, k_tile, v_tile);
    wgmma_commit();
    wgmma_wait<0>();
    hold_registers(s_flat);
    hold_registers(dp_flat);

    uint32_t ds[kTile / 16][4];  // all four before the first product: an in-flight wgmma owns its A registers
    dq_ds_in_place(s, dp, k0, block.w0, row_lse, row_d, d);
    pack_a_fragments<T>(ds, dp);
    uint32_t(&ds_flat)[kTile / 4] = reinterpret_cast<uint32_t(&)[kTile / 4]>(ds);
    hold_registers(ds_flat);
    hold_registers(dq_flat);
    run_dq_product(dq_flat, ds, k_tile);
  }
  block.write(dqkv, dq, d);
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
  run_dkdv_products(dv_flat, dk_flat, p, ds, q_tile, do_tile, c0);
}

template <typename T>
__global__ void __launch_bounds__(kBlockThreads, 4)
    flash_backward_dkdv_wgmma_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D,
                                     TcDims d) {
  constexpr int HS = kWgmmaHeadSize;
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  const DkdvBlock<T, 2> block(shared_bytes, qkv, dout, lse, D, d);  // query tiles in two slots
  float dk[HS / 8][4] = {}, dv[HS / 8][4] = {};
  float(&dk_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dk);
  float(&dv_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dv);
  for (int64_t q0 = block.k0; q0 < d.T; q0 += kTile) {
    block.start_queries(q0, d);
    const T* q_tile = block.q_tile(q0);
    const float* row_lse = block.row_lse(q0);
#pragma unroll 1
    for (int c0 = 0; c0 < kTile && q0 + c0 < d.T; c0 += kHalfTile) {  // the same for the whole warpgroup
      dkdv_half_tile<T>(dk_flat, dv_flat, block.k_rows, block.v_rows, q_tile, q_tile + kCoreTileElements, row_lse,
                        row_lse + kTile, c0, q0, block.w0, d);
    }
  }
  block.write(dqkv, dk, dv, d);
}

constexpr size_t kDqSharedBytes = DqBlock<__nv_bfloat16, 2>::kSharedBytes;  // 48 KiB (f16 the same)
constexpr size_t kDkdvSharedBytes = DkdvBlock<__nv_bfloat16, 2>::kSharedBytes;
static_assert(kDqSharedBytes <= 48 * 1024, "the wgmma dQ kernel needs more than 48 KiB of shared memory");
// (4 blocks an SM: each block also takes 1 KiB the system reserves, of the SM's 228.)
static_assert(4 * (kDkdvSharedBytes + 1024) <= 228 * 1024, "the wgmma dK/dV kernel no longer fits 4 blocks");

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
