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
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  const DqBlock<T, kSlots> block(shared_bytes, qkv, dout, d);
  float row_lse[2], row_d[2];  // rows g and g + 8: lse in log2 units, D
  dq_row_values<T>(row_lse, row_d, D, block.do_base, out, lse, block.w0, d);
  float dq[HS / 8][4] = {};
  float(&dq_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dq);
  uint32_t ds[kTile / 16][4];  // the tile before's dS, A of its product into dQ
  uint32_t(&ds_flat)[kTile / 4] = reinterpret_cast<uint32_t(&)[kTile / 4]>(ds);
  const int64_t block_last = block.last_key(d);
  for (int64_t k0 = 0; k0 <= block_last; k0 += kTile) {
    // Tile j has landed. The slot the next group fills held tile j - 2,
    // whose product every thread waited for in step j - 1, before this barrier.
    block.start_keys(k0, d);
    const T* k_tile = block.k_tile(k0);

    float s[kTileBlocks][4], dp[kTileBlocks][4];
    float(&s_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(s);
    float(&dp_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(dp);
    wgmma_fence();
    issue_dq_scores(s_flat, dp_flat, block.q_tile, block.do_tile, k_tile, k_tile + kCoreTileElements);
    wgmma_commit();
    if (k0 > 0) {
      wgmma_fence();  // ptxas does not follow the fence above into this block (warning C7519)
      issue_dq_product(dq_flat, ds, block.k_tile(k0 - kTile));
      wgmma_commit();
      wgmma_wait<1>();  // the scores; the product into dQ may still run
    } else {
      wgmma_wait<0>();
    }
    hold_registers(s_flat);
    hold_registers(dp_flat);
    dq_ds_in_place(s, dp, k0, block.w0, row_lse, row_d, d);
    wgmma_wait<0>();
    hold_registers(dq_flat);
    hold_registers(ds_flat);
    pack_a_fragments<T>(ds, dp);
  }
  run_dq_product(dq_flat, ds, block.k_tile(block_last));  // the last tile's
  block.write(dqkv, dq, d);
}

template <typename T>
__global__ void __launch_bounds__(kBlockThreads, 3)
    flash_backward_dkdv_wgmma_overlapped_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse,
                                                const float* D, TcDims d) {
  constexpr int HS = kWgmmaHeadSize;
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  const DkdvBlock<T, kSlots> block(shared_bytes, qkv, dout, lse, D, d);
  float dk[HS / 8][4] = {}, dv[HS / 8][4] = {};
  float(&dk_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dk);
  float(&dv_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(dv);
  uint32_t p[kHalfTile / 16][4], ds[kHalfTile / 16][4];  // the 32 queries before's P^T and dS^T
  uint32_t(&p_flat)[kHalfTile / 4] = reinterpret_cast<uint32_t(&)[kHalfTile / 4]>(p);
  uint32_t(&ds_flat)[kHalfTile / 4] = reinterpret_cast<uint32_t(&)[kHalfTile / 4]>(ds);
  const T* before_tile = nullptr;  // their Q tile (dO just after it) and first query, once there are some
  int before_c0 = 0;
  for (int64_t q0 = block.k0; q0 < d.T; q0 += kTile) {
    // Tile i has landed. The slot the next group fills held tile i - 2,
    // whose last product every thread waited for in tile i - 1, before this barrier.
    block.start_queries(q0, d);
    const T* q_tile = block.q_tile(q0);
    const float* row_lse = block.row_lse(q0);
#pragma unroll 1
    for (int c0 = 0; c0 < kTile && q0 + c0 < d.T; c0 += kHalfTile) {  // the same for the whole warpgroup
      float st[kHalfTile / 8][4], dpt[kHalfTile / 8][4];  // S^T and dP^T: (16 keys, 32 queries) a warp
      float(&st_flat)[kHalfTile / 2] = reinterpret_cast<float(&)[kHalfTile / 2]>(st);
      float(&dpt_flat)[kHalfTile / 2] = reinterpret_cast<float(&)[kHalfTile / 2]>(dpt);
      wgmma_fence();
      issue_dkdv_scores(st_flat, dpt_flat, block.k_rows, block.v_rows, q_tile, q_tile + kCoreTileElements, c0);
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
      dkdv_probabilities_in_place(st, dpt, row_lse, row_lse + kTile, c0, q0, block.w0, d);
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
  // The last 32 queries' products (every block has some: k0 < T).
  run_dkdv_products(dv_flat, dk_flat, p, ds, before_tile, before_tile + kCoreTileElements, before_c0);
  block.write(dqkv, dk, dv, d);
}

constexpr size_t kDqSharedBytes = DqBlock<__nv_bfloat16, kSlots>::kSharedBytes;  // 64 KiB (f16 the same)
constexpr size_t kDkdvSharedBytes = DkdvBlock<__nv_bfloat16, kSlots>::kSharedBytes;  // 65.5 KiB
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
