// The fused attention forward on Hopper's warpgroup MMA (wgmma,
// kernels/cuda/wgmma.cuh), for head size 64 (GPT-2's), opted into with
// SG_FLASH_WGMMA=1 on a compute capability 9.0 GPU (H100, H200); the
// mma.sync kernel (flash_attention_tc.cu) takes everything else. Built for
// sm_90a alone (kernels/CMakeLists.txt). The backward, the same way:
// flash_attention_wgmma_backward.cu; the tiles both use:
// flash_attention_wgmma_tiles.cuh.
//
// The same blocks, math and softmax as flash_forward_tc_kernel: a block is
// one warpgroup (4 warps) and 64 query rows, warp w holds rows 16 w..16 w +
// 15, and the key tiles (64 keys of K and V) stream through shared memory
// in two buffers. What changes is who makes the products:
//   S (64 x 64) = Q K^T: four wgmma (16 of the head's columns each), Q and
//     K both read by the tensor cores from shared memory;
//   O (64 x 64) += P V: four wgmma (16 keys each), P from registers (each
//     warp's probabilities, rounded to 16 bits, as mma.sync's A fragments),
//     V from shared memory, read N-major (a tile's rows are keys, K here).
// In the mma.sync kernel each of the four warps read all of K and V through
// ldmatrix, 36 reads a warp a tile; here the tensor cores read each tile
// once for the block. The accumulators lie in registers as mma.sync's do,
// so online_softmax and write_rows are the mma.sync kernel's own.
//
// The tiles are stored without padding, in wgmma's core matrices: column
// chunk j (8 of the head's columns) of all 64 rows is 1 KiB, row r of it
// the 16 bytes at r 16 (fetch_core_tile fills it). The same bytes serve
// K-major reads (Q and K: rows are M or N, the head's columns are K) and
// N-major reads (V: rows are K).
// Not yet run on a GPU (docs/performance.md).
#include <atomic>

#include "kernels/cuda/flash_attention_tc.h"
#include "kernels/cuda/flash_attention_wgmma_tiles.cuh"

namespace sg::cuda {
namespace {

// S = Q K^T for one key tile: four wgmma over the head's columns, Q and K
// K-major in shared memory. Issued, not committed.
template <typename T>
__device__ __forceinline__ void issue_scores(float (&s_flat)[4 * kTileBlocks], const T* q_tile, const T* k_tile) {
#pragma unroll
  for (int kk = 0; kk < kWgmmaHeadSize / 16; ++kk) {
    wgmma_ss<T, 64>(s_flat, k_major(q_tile, kk), k_major(k_tile, kk), kk > 0);
  }
}

// O += P V for one key tile: four wgmma over its keys, P from registers
// (mma.sync's A fragments), V N-major. Issued, not committed.
template <typename T>
__device__ __forceinline__ void issue_output_product(float (&o_flat)[4 * kWgmmaHeadSize / 8],
                                                     const uint32_t (&p)[kTile / 16][4], const T* v_tile) {
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) wgmma_rs_n_major<T>(o_flat, p[kk], n_major(v_tile, kk), true);
}

// The same, fenced, committed and waited for, its registers held across.
template <typename T>
__device__ __forceinline__ void run_output_product(float (&o_flat)[4 * kWgmmaHeadSize / 8],
                                                   uint32_t (&p)[kTile / 16][4], const T* v_tile) {
  uint32_t(&p_flat)[kTile / 4] = reinterpret_cast<uint32_t(&)[kTile / 4]>(p);
  wgmma_fence();
  issue_output_product(o_flat, p, v_tile);
  wgmma_commit();
  wgmma_wait<0>();
  hold_registers(o_flat);
  hold_registers(p_flat);
}

template <typename T>
__global__ void __launch_bounds__(kBlockThreads, 4)
    flash_forward_wgmma_kernel(T* out, float* lse, const T* qkv, TcDims d) {
  constexpr int HS = kWgmmaHeadSize;
  // Two buffers of a K tile and a V tile each (one computed on, one filling), then the block's queries.
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  T* tiles = reinterpret_cast<T*>(shared_bytes);
  const HeadRows rows = head_rows<HS>(d, true);
  const int64_t row_stride = 3 * d.C, q0 = rows.first, w0 = rows.warp_first;
  const T* base = qkv + rows.qkv_offset;
  T* q_tile = tiles + 4 * kCoreTileElements;
  fetch_core_tile(q_tile, base, row_stride, q0, d.T);  // in the first tiles' group
  fetch_core_keys_values(tiles, 0, base, d.C, 0, d.T);

  float o[HS / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // as flash_forward_tc_kernel's
  float(&o_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(o);
  const float scale_log2 = d.scale * kLog2e;
  // Every key tile up to the block's last row: each warp sees some key of
  // each (k0 <= q0, and row w0 sees key w0 >= k0), so no warp sits one out,
  // as a warpgroup's wgmma needs all four.
  const int64_t block_last = min(d.T - 1, q0 + kRows - 1);
  int buffer = 0;
  for (int64_t k0 = 0; k0 <= block_last; k0 += kTile, buffer ^= 1) {
    // This tile has landed (and, after the fence, is visible to wgmma's
    // reads); every warp's products on the other buffer were waited for
    // before the barrier, so the next tile may fill it.
    async_wait<0>();
    fence_shared_for_wgmma();
    __syncthreads();
    if (k0 + kTile <= block_last) fetch_core_keys_values(tiles, buffer ^ 1, base, d.C, k0 + kTile, d.T);
    const T* k_tile = tiles + 2 * buffer * kCoreTileElements;
    const T* v_tile = k_tile + kCoreTileElements;

    float s[kTileBlocks][4];
    float(&s_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(s);
    wgmma_fence();
    issue_scores(s_flat, q_tile, k_tile);
    wgmma_commit();
    wgmma_wait<0>();
    hold_registers(s_flat);

    online_softmax<HS>(s, o, m, l, k0, w0, d.T, scale_log2);

    uint32_t p[kTile / 16][4];  // all four before the first product: an in-flight wgmma owns its A registers
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) a_of_pair<T>(p[kk], s[2 * kk], s[2 * kk + 1]);
    uint32_t(&p_flat)[kTile / 4] = reinterpret_cast<uint32_t(&)[kTile / 4]>(p);
    hold_registers(p_flat);
    hold_registers(o_flat);
    run_output_product(o_flat, p, v_tile);
  }
  finish_forward_rows<T, HS>(out + rows.out_offset, lse, o, m, l, w0, d);
}

// The same forward with a warpgroup's products overlapping its softmax, as
// FlashAttention-3's "intra-warpgroup overlapping": tile j's scores S_j =
// Q K_j^T and the tile before's O += P_{j-1} V_{j-1} are issued together;
// the kernel waits for the scores alone and computes their exponentials
// (the MUFU unit's work, as long as the tensor cores' at head size 64)
// while the product into O runs, then waits for it, rescales O and packs
// P_j. So the kernel above's two waits a tile, each with the warpgroup
// idle, become one with the exponentials under it. P_{j-1}'s 16 registers
// stay live through the softmax; ptxas still fits the kernel in 128 (no
// spills), 4 blocks an SM as the kernel above. The staging shifts with the
// products: a tile needs K_j and V_{j-1}, so each group fetches the next
// K and this tile's V (fetch_core_next_keys_and_values), the same 40 KiB.
// SG_FLASH_WGMMA_OVERLAP=0 takes the kernel above instead.
template <typename T>
__global__ void __launch_bounds__(kBlockThreads, 4)
    flash_forward_wgmma_overlapped_kernel(T* out, float* lse, const T* qkv, TcDims d) {
  constexpr int HS = kWgmmaHeadSize;
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  T* tiles = reinterpret_cast<T*>(shared_bytes);  // K and V slots 0 and 1, then the block's queries
  const HeadRows rows = head_rows<HS>(d, true);
  const int64_t row_stride = 3 * d.C, q0 = rows.first, w0 = rows.warp_first;
  const T* base = qkv + rows.qkv_offset;
  T* q_tile = tiles + 4 * kCoreTileElements;
  fetch_core_tile(q_tile, base, row_stride, q0, d.T);
  fetch_core_tile(tiles, base + d.C, row_stride, 0, d.T);  // K_0, in slot 0
  async_commit();

  float o[HS / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float(&o_flat)[4 * HS / 8] = reinterpret_cast<float(&)[4 * HS / 8]>(o);
  uint32_t p[kTile / 16][4];  // the tile before's probabilities, A of its product into O
  uint32_t(&p_flat)[kTile / 4] = reinterpret_cast<uint32_t(&)[kTile / 4]>(p);
  auto v_slot = [&](int64_t k0) { return tiles + (2 * (k0 / kTile % 2) + 1) * kCoreTileElements; };
  const float scale_log2 = d.scale * kLog2e;
  const int64_t block_last = min(d.T - 1, q0 + kRows - 1);
  for (int64_t k0 = 0; k0 <= block_last; k0 += kTile) {
    // K_j and V_{j-1} have landed (and are visible to wgmma). The slots the
    // next group fills held K_{j-1}, whose scores were waited for, and
    // V_{j-2}, whose product was: by every thread, before this barrier.
    async_wait<0>();
    fence_shared_for_wgmma();
    __syncthreads();
    fetch_core_next_keys_and_values(tiles, base, d.C, k0 + kTile <= block_last ? k0 + kTile : -1, k0, d.T);
    const T* k_tile = tiles + 2 * (k0 / kTile % 2) * kCoreTileElements;

    float s[kTileBlocks][4];
    float(&s_flat)[4 * kTileBlocks] = reinterpret_cast<float(&)[4 * kTileBlocks]>(s);
    wgmma_fence();
    issue_scores(s_flat, q_tile, k_tile);
    wgmma_commit();
    if (k0 > 0) {
      wgmma_fence();  // the fence above is in another basic block, which ptxas does not follow (warning C7519)
      issue_output_product(o_flat, p, v_slot(k0 - kTile));
      wgmma_commit();
      wgmma_wait<1>();  // the scores; the product into O may still run
    } else {
      wgmma_wait<0>();
    }
    hold_registers(s_flat);
    const RowCorrections correction = softmax_scores(s, m, l, k0, w0, d.T, scale_log2);
    wgmma_wait<0>();
    hold_registers(o_flat);
    hold_registers(p_flat);
    rescale_rows<HS>(o, correction);
#pragma unroll
    for (int kk = 0; kk < kTile / 16; ++kk) a_of_pair<T>(p[kk], s[2 * kk], s[2 * kk + 1]);
  }
  // The last tile's V has landed: its product.
  async_wait<0>();
  fence_shared_for_wgmma();
  __syncthreads();
  run_output_product(o_flat, p, v_slot(block_last));
  finish_forward_rows<T, HS>(out + rows.out_offset, lse, o, m, l, w0, d);
}

constexpr size_t kWgmmaForwardSharedBytes = 5 * kCoreTileElements * 2;  // two buffers of two tiles, and Q
static_assert(kWgmmaForwardSharedBytes <= 48 * 1024, "the wgmma forward needs more than 48 KiB of shared memory");

std::atomic<int64_t> g_wgmma_forwards{0};  // flash_wgmma_forwards

}  // namespace

bool flash_forward_wgmma(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                         DType dtype, cudaStream_t stream) {
  if (!wgmma_attention_applies(C, NH, dtype)) return false;
  const TcDims d{T, C, NH, 1.0f / sqrtf(float(kWgmmaHeadSize))};
  const bool overlapped = env_switch_on("SG_FLASH_WGMMA_OVERLAP");
  with_half_type(dtype, [&](auto tag) {
    using Ty = decltype(tag);
    if (overlapped) {
      flash_forward_wgmma_overlapped_kernel<Ty><<<grid_for(B, T, NH), kBlockThreads, kWgmmaForwardSharedBytes,
                                                  stream>>>(static_cast<Ty*>(out), lse, static_cast<const Ty*>(qkv), d);
    } else {
      flash_forward_wgmma_kernel<Ty><<<grid_for(B, T, NH), kBlockThreads, kWgmmaForwardSharedBytes, stream>>>(
          static_cast<Ty*>(out), lse, static_cast<const Ty*>(qkv), d);
    }
  });
  SG_CHECK_LAUNCH();
  g_wgmma_forwards.fetch_add(1, std::memory_order_relaxed);
  return true;
}

int64_t flash_wgmma_forwards() { return g_wgmma_forwards.load(std::memory_order_relaxed); }

}  // namespace sg::cuda
