// Attention's backward on wgmma with each kernel's products overlapping its
// exponentials, as the overlapped forward does (flash_attention_wgmma.cu,
// docs/gpu.md): the default where SG_FLASH_WGMMA=1 applies;
// SG_FLASH_WGMMA_OVERLAP=0 takes the kernels of
// flash_attention_wgmma_backward.cu, whose steps (in
// flash_attention_wgmma_backward.cuh) these share. Not yet run on a GPU.
//
// Each kernel's unit of work (a key tile for dQ, 32 queries for dK/dV)
// computes scores, then exponentials, then a product into its outputs.
// Here the scores of unit n and the product of unit n - 1 are issued
// together; the kernel waits for the scores alone, computes unit n's
// exponentials while the product runs, then waits for it and packs unit
// n's A fragments (the product's A registers are free only then). The
// cost: the packed fragments of unit n - 1 live beside unit n's scores,
// and the tiles unit n - 1's product reads stay resident one unit longer,
// so the streamed tiles rotate through three slots instead of two.
#include "kernels/cuda/flash_attention_wgmma_backward.cuh"

namespace sg::cuda {
namespace {

constexpr int kSlots = 3;  // tile i in slot i % 3: i + 1 fills while i - 1's last product may still read

template <typename T>
__global__ void __launch_bounds__(kBlockThreads, 3)
    flash_backward_dq_wgmma_overlapped_kernel(T* dqkv, float* D, const T* dout, const T* qkv, const T* out,
                                              const float* lse, TcDims d) {
  constexpr int HS = kWgmmaHeadSize;
  // Three slots of a K tile and a V tile each, then the block's Q rows and dO rows.
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  T* tiles = reinterpret_cast<T*>(shared_bytes);
  T* q_tile = tiles + 2 * kSlots * kCoreTileElements;
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
  uint32_t ds[kTile / 16][4];  // the tile before's dS, A of its product into dQ
  uint32_t(&ds_flat)[kTile / 4] = reinterpret_cast<uint32_t(&)[kTile / 4]>(ds);
  auto k_slot = [&](int64_t k0) { return tiles + 2 * (k0 / kTile % kSlots) * kCoreTileElements; };
  const int64_t block_last = min(d.T - 1, q0 + kRows - 1);
  for (int64_t k0 = 0; k0 <= block_last; k0 += kTile) {
    // Tile j has landed. The slot the next group fills held tile j - 2,
    // whose product every thread waited for in step j - 1, before this barrier.
    async_wait<0>();
    fence_shared_for_wgmma();
    __syncthreads();
    if (k0 + kTile <= block_last) {
      fetch_core_keys_values(tiles, int((k0 / kTile + 1) % kSlots), base, d.C, k0 + kTile, d.T);
    }
    const T* k_tile = k_slot(k0);

    float s[kTileBlocks][4], dp[kTileBlocks][4];
    float(&s_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(s);
    float(&dp_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(dp);
    wgmma_fence();
    issue_dq_scores(s_flat, dp_flat, q_tile, do_tile, k_tile, k_tile + kCoreTileElements);
    wgmma_commit();
    if (k0 > 0) {
      wgmma_fence();  // ptxas does not follow the fence above into this block (warning C7519)
      issue_dq_product(dq_flat, ds, k_slot(k0 - kTile));
      wgmma_commit();
      wgmma_wait<1>();  // the scores; the product into dQ may still run
    } else {
      wgmma_wait<0>();
    }
    hold_registers(s_flat);
    hold_registers(dp_flat);
    dq_ds_in_place(s, dp, k0, w0, row_lse, row_d, d);
    wgmma_wait<0>();
    hold_registers(dq_flat);
    hold_registers(ds_flat);
    pack_a_fragments<T>(ds, dp);
  }
  wgmma_fence();  // the last tile's product
  issue_dq_product(dq_flat, ds, k_slot(block_last / kTile * kTile));
  wgmma_commit();
  wgmma_wait<0>();
  hold_registers(dq_flat);
  hold_registers(ds_flat);
  const float one[2] = {1.0f, 1.0f};
  write_rows<T, HS>(dqkv + b * d.T * row_stride + h * HS, row_stride, dq, w0, d.T, one);
}

template <typename T>
__global__ void __launch_bounds__(kBlockThreads, 3)
    flash_backward_dkdv_wgmma_overlapped_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse,
                                                const float* D, TcDims d) {
  constexpr int HS = kWgmmaHeadSize;
  // Three slots of a Q tile and a dO tile each, the block's K rows and V rows, then three slots of the
  // 64 queries' lse and D.
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  T* tiles = reinterpret_cast<T*>(shared_bytes);
  T* k_rows = tiles + 2 * kSlots * kCoreTileElements;
  T* v_rows = k_rows + kCoreTileElements;
  float* row_values = reinterpret_cast<float*>(v_rows + kCoreTileElements);
  const int warp = threadIdx.x / 32;
  const int64_t b = blockIdx.x / d.NH, h = blockIdx.x % d.NH, row_stride = 3 * d.C;
  const T* base = qkv + b * d.T * row_stride + h * HS;
  const T* do_base = dout + b * d.T * d.C + h * HS;
  const int64_t k0 = int64_t(blockIdx.y) * kRows, w0 = k0 + 16 * warp;  // the first blocks see the most queries
  auto fetch = [&](int64_t q0, int slot) {  // Q, dO and the queries' lse and D
    T* q_tile = tiles + 2 * slot * kCoreTileElements;
    fetch_core_tile(q_tile, base, row_stride, q0, d.T);
    fetch_core_tile(q_tile + kCoreTileElements, do_base, d.C, q0, d.T);
    fetch_row_values(row_values + 2 * slot * kTile, lse + blockIdx.x * d.T, q0, d.T);
    fetch_row_values(row_values + (2 * slot + 1) * kTile, D + blockIdx.x * d.T, q0, d.T);
    async_commit();
  };
  fetch_core_tile(k_rows, base + d.C, row_stride, k0, d.T);  // in the first tiles' group
  fetch_core_tile(v_rows, base + 2 * d.C, row_stride, k0, d.T);
  fetch(k0, 0);

  float dk[HS / 8][4] = {}, dv[HS / 8][4] = {};
  float(&dk_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dk);
  float(&dv_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dv);
  uint32_t p[kHalfTile / 16][4], ds[kHalfTile / 16][4];  // the 32 queries before's P^T and dS^T
  uint32_t(&p_flat)[kHalfTile / 4] = reinterpret_cast<uint32_t(&)[kHalfTile / 4]>(p);
  uint32_t(&ds_flat)[kHalfTile / 4] = reinterpret_cast<uint32_t(&)[kHalfTile / 4]>(ds);
  const T* before_tile = nullptr;  // their Q tile (dO just after it) and first query, once there are some
  int before_c0 = 0;
  int tile = 0;
  for (int64_t q0 = k0; q0 < d.T; q0 += kTile, ++tile) {
    // Tile i has landed. The slot the next group fills held tile i - 2,
    // whose last product every thread waited for in tile i - 1, before this barrier.
    async_wait<0>();
    fence_shared_for_wgmma();
    __syncthreads();
    if (q0 + kTile < d.T) fetch(q0 + kTile, (tile + 1) % kSlots);
    const T* q_tile = tiles + 2 * (tile % kSlots) * kCoreTileElements;
    const float* row_lse = row_values + 2 * (tile % kSlots) * kTile;
#pragma unroll 1
    for (int c0 = 0; c0 < kTile && q0 + c0 < d.T; c0 += kHalfTile) {  // the same for the whole warpgroup
      float st[kHalfTile / 8][4], dpt[kHalfTile / 8][4];  // S^T and dP^T: (16 keys, 32 queries) a warp
      float(&st_flat)[kHalfTile / 2] = reinterpret_cast<float(&)[kHalfTile / 2]>(st);
      float(&dpt_flat)[kHalfTile / 2] = reinterpret_cast<float(&)[kHalfTile / 2]>(dpt);
      wgmma_fence();
      issue_dkdv_scores(st_flat, dpt_flat, k_rows, v_rows, q_tile, q_tile + kCoreTileElements, c0);
      wgmma_commit();
      if (before_tile != nullptr) {
        wgmma_fence();  // as in the dQ kernel
        issue_dkdv_products(dv_flat, dk_flat, p, ds, before_tile, before_tile + kCoreTileElements, before_c0);
        wgmma_commit();
        wgmma_wait<1>();  // the scores; the products into dK and dV may still run
      } else {
        wgmma_wait<0>();
      }
      hold_registers(st_flat);
      hold_registers(dpt_flat);
      dkdv_probabilities_in_place(st, dpt, row_lse, row_lse + kTile, c0, q0, w0, d);
      wgmma_wait<0>();
      hold_registers(dv_flat);
      hold_registers(dk_flat);
      hold_registers(p_flat);
      hold_registers(ds_flat);
      pack_a_fragments<T>(p, st);
      pack_a_fragments<T>(ds, dpt);
      before_tile = q_tile;
      before_c0 = c0;
    }
  }
  wgmma_fence();  // the last 32 queries' products (every block has some: k0 < T)
  issue_dkdv_products(dv_flat, dk_flat, p, ds, before_tile, before_tile + kCoreTileElements, before_c0);
  wgmma_commit();
  wgmma_wait<0>();
  hold_registers(dv_flat);
  hold_registers(dk_flat);
  hold_registers(p_flat);
  hold_registers(ds_flat);
  const float one[2] = {1.0f, 1.0f};
  T* rows = dqkv + b * d.T * row_stride + h * HS;
  write_rows<T, HS>(rows + d.C, row_stride, dk, w0, d.T, one);
  write_rows<T, HS>(rows + 2 * d.C, row_stride, dv, w0, d.T, one);
}

constexpr size_t kDqSharedBytes = (2 * kSlots + 2) * kCoreTileElements * 2;  // K and V slots, Q and dO: 64 KiB
constexpr size_t kDkdvSharedBytes = (2 * kSlots + 2) * kCoreTileElements * 2 + 2 * kSlots * kTile * sizeof(float);
static_assert(3 * kDqSharedBytes <= 227 * 1024, "the overlapped dQ kernel no longer fits 3 blocks an SM");
static_assert(3 * kDkdvSharedBytes <= 227 * 1024, "the overlapped dK/dV kernel no longer fits 3 blocks an SM");

}  // namespace

void launch_wgmma_backward_overlapped(void* dqkv, float* row_dots, const void* dout, const void* qkv,
                                      const void* out, const float* lse, int64_t B, int64_t T, int64_t C,
                                      int64_t NH, DType dtype, cudaStream_t stream) {
  const TcDims d{T, C, NH, 1.0f / sqrtf(float(kWgmmaHeadSize))};
  const dim3 grid = grid_for(B, T, NH);
  with_half_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    // dQ first: it writes D (row_dots), which dK/dV reads. Both over the 48 KiB a launch may ask for
    // without opting in.
    CUDA_CHECK(cudaFuncSetAttribute(flash_backward_dq_wgmma_overlapped_kernel<T>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(kDqSharedBytes)));
    flash_backward_dq_wgmma_overlapped_kernel<T><<<grid, kBlockThreads, kDqSharedBytes, stream>>>(
        static_cast<T*>(dqkv), row_dots, static_cast<const T*>(dout), static_cast<const T*>(qkv),
        static_cast<const T*>(out), lse, d);
    SG_CHECK_LAUNCH();
    CUDA_CHECK(cudaFuncSetAttribute(flash_backward_dkdv_wgmma_overlapped_kernel<T>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(kDkdvSharedBytes)));
    flash_backward_dkdv_wgmma_overlapped_kernel<T><<<grid, kBlockThreads, kDkdvSharedBytes, stream>>>(
        static_cast<T*>(dqkv), static_cast<const T*>(dout), static_cast<const T*>(qkv), lse, row_dots, d);
    SG_CHECK_LAUNCH();
  });
}

}  // namespace sg::cuda
