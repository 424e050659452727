// Fused causal attention on tensor cores (kernels/cuda/flash_attention_tc.h):
// the same math as flash_attention.cu (kernels/cpu/flash_attention.h writes
// it out), with every product a PTX mma.sync m16n8k16 (kernels/cuda/mma.cuh)
// in bf16/f16 with f32 sums, laid out as FlashAttention-2 does.
//
// A block is 4 warps; each warp owns 16 rows (queries in the forward and
// dQ, keys in dK/dV) and keeps their accumulators and the scores of the
// current step in registers. (Two tiles of 16 a warp, as
// FlashAttention-2's forward, sharing each fragment read between them,
// needed 254 registers and were slower on an H100 at GPT-2's shape,
// docs/performance.md.) Registers decide how many warps an SM holds, and
// more warps hide more of each one's waits, so every kernel keeps as few
// live as it can: the forward's Q rows and dK/dV's K rows wait in shared
// memory (read again by ldmatrix for each product: 16 registers fewer),
// and the backward kernels take a tile 16 columns at a time, each chunk's
// scores, dP and dS (8 registers each) going straight into the next
// product, never a whole tile's 32. The other
// side streams through shared memory 64 rows at a time, in two buffers:
// cp.async fills one while the block computes on the other
// (kernels/cuda/async_copy.cuh), and ldmatrix reads the operands out of it.
// The mma layout names the row and column of each register, so the online
// softmax works where the scores lie: a lane holds two rows (g and g + 8),
// and the four lanes that share them combine their maxima and sums with two
// shuffles. The probabilities, rounded to 16 bits, are the next product's
// A operand without leaving registers. Every output element has one writer:
// no atomics, the same bits every run. (The tiles, fragments and softmax
// these kernels are built from: kernels/cuda/flash_attention_tc_tiles.cuh.)
//
// Shapes (per (batch, head), HS = head size, 16-64):
//   forward:  S = Q_w K^T (16 x 64), P = exp(S scale - m), O_w += P V (16 x HS)
//   dQ:       S = Q_w K^T, P, dP = dO_w V^T, dS = P (dP - D) scale,
//             dQ_w += dS K; and D = rowsum(dO_w O_w)
//   dK, dV:   S^T = K_w Q^T, P^T = exp(S^T scale - lse), dV_w += P^T dO,
//             dP^T = V_w dO^T, dS^T = P^T (dP^T - D) scale, dK_w += dS^T Q
//   fused dQ (SG_FLASH_FUSED_DQ=1, instead of the dQ kernel): D first, by a
//             kernel of its own; in dK/dV, dS^T (64 keys x 64 queries) to
//             shared memory, then dQ partial (16 queries x HS) = dS K over
//             the block's 64 keys, a warp's 16 queries; then the partials
//             of each query tile summed in key-block order
#include "kernels/cuda/flash_attention_tc.h"

#include "kernels/cuda/flash_attention_tc_tiles.cuh"
#include "kernels/env_switch.h"

namespace sg::cuda {
namespace {

// out = softmax(mask(q k^T * scale)) v for 64 query rows of one (batch,
// head); lse = the rows' log-sum-exp. The blocks with the most keys to see
// (the last rows) start first. MinBlocks: the blocks an SM that ptxas must
// fit (forward_more_warps()).
template <typename T, int HS, int MinBlocks>
__global__ void __launch_bounds__(kBlockThreads, MinBlocks)
    flash_forward_tc_kernel(T* out, float* lse, const T* qkv, TcDims d) {
  // Two buffers of a K tile and a V tile each (one computed on, one filling), then the block's queries.
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  T* tiles = reinterpret_cast<T*>(shared_bytes);
  const int warp = threadIdx.x / 32;
  const HeadRows rows = head_rows<HS>(d, true);
  const int64_t row_stride = 3 * d.C, q0 = rows.first, w0 = rows.warp_first;
  const T* base = qkv + rows.qkv_offset;
  T* q_rows = tiles + 4 * tile_elements<HS>();  // the block's 64 queries
  fetch_tile<HS>(q_rows, base, row_stride, q0, d.T);  // in the first tiles' group
  fetch_keys_values<HS>(tiles, 0, base, d.C, 0, d.T);

  float o[HS / 8][4] = {};
  // Rows g and g + 8: the running max of the scores in log2 units (s scale log2 e),
  // and this lane's part of the running sum of exp2(x - max).
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const float scale_log2 = d.scale * kLog2e;
  for_each_key_tile<HS>(tiles, base, d, q0, w0, [&](int64_t k0, const T* k_tile, const T* v_tile) {
    // Over the tile's first `chunks` 16-key chunks: the others' keys come
    // after every row of this warp (or past T), so their scores are masked
    // and their products not made.
    auto step = [&](int chunks) {
      float s[kTileBlocks][4];  // (16 queries, 64 keys); 0 past `chunks`, keys no row sees: -inf below
      scores_tile<T, HS>(s, q_rows, 16 * warp, k_tile, chunks);
      online_softmax<HS>(s, o, m, l, k0, w0, d.T, scale_log2);
      accumulate<T, HS>(o, s, v_tile, chunks);
    };
    // Every chunk but on the diagonal (or at T); there, those up to the
    // warp's last row (w0 - k0 is a multiple of 16) and inside T. Two
    // copies of the step, so the common one has no chunk tests at all.
    if (tile_masked(k0, w0, d.T)) step(int(min(int64_t(kTile / 16), min((w0 - k0) / 16 + 1, (d.T - k0 + 15) / 16))));
    else step(kTile / 16);
  });
  finish_forward_rows<T, HS>(out + rows.out_offset, lse, o, m, l, w0, d);
}

// One query tile of dK/dV (the dK/dV kernel's loop body): this warp's
// rows (keys w0..w0 + 15) against the tile's 64 queries from q0, in the
// buffer `buffer` of Q, dO, lse and D. With StoreDs, each 16-query chunk's
// dS^T (16 keys, 16 queries) also goes to ds_tile, rows 16 warp.., as
// packed for dK's product: for dQ (dq_of_tile).
template <typename T, int HS, int Unroll, bool StoreDs>
__device__ __forceinline__ void dkdv_tile(float (&dk)[HS / 8][4], float (&dv)[HS / 8][4],
                                          const uint32_t (&v)[HS / 16][4], const T* k_rows, T* ds_tile,
                                          const T* tiles, const float* row_values, int buffer, int64_t q0, int64_t w0,
                                          const TcDims& d) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
  if (q0 + kTile - 1 < w0) return;  // every query is before every key of this warp
  const float scale_log2 = d.scale * kLog2e;
  const T* q_tile = tiles + 2 * buffer * tile_elements<HS>();
  const T* do_tile = q_tile + tile_elements<HS>();
  const float* row_lse = row_values + 2 * buffer * kTile;  // natural-log units
  const float* row_d = row_lse + kTile;
  const bool masked = q0 < w0 + 15 || q0 + kTile > d.T;  // some query before some key, or past T
  const int diagonal = int(q0 - w0);                      // query - key = diagonal + column - row
  const int queries = int(min(d.T - q0, int64_t(kTile)));  // the tile's columns inside T
  // 16 queries (columns 16 c..16 c + 15) at a time, each product of the
  // chunk feeding the next in registers: the scores, dP and dS of 16
  // columns (8 registers each), not of 64, are live at once.
#pragma unroll Unroll
  for (int c = 0; c < kTile / 16; ++c) {
    // Every query of the chunk before every key of this warp, or past T: nothing to add.
    if (masked && (diagonal + 16 * c + 15 < 0 || 16 * c >= queries)) continue;
    float p[2][4], ds[2][4];  // P^T, then dP^T and dS^T: (16 keys, 16 queries)
    scores_pair<T, HS>(p[0], p[1], k_rows, 16 * warp, q_tile, 16 * c);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const int first = 16 * c + 8 * j + 2 * t;  // this lane's columns: first, first + 1
      const float2 lse_pair = *reinterpret_cast<const float2*>(row_lse + first);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int column = first + (i & 1), row = g + (i >= 2 ? 8 : 0);
        const float row_lse_log2 = ((i & 1) ? lse_pair.y : lse_pair.x) * kLog2e;
        p[j][i] = !masked || (diagonal + column >= row && column < queries)
                      ? fast_exp2(p[j][i] * scale_log2 - row_lse_log2)
                      : 0.0f;
      }
    }
    uint32_t a[4];
    a_of_pair<T>(a, p[0], p[1]);
    accumulate_rows<T, HS>(dv, a, do_tile, 16 * c);
    scores_pair<T, HS>(ds[0], ds[1], v, do_tile, 16 * c);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float2 d_pair = *reinterpret_cast<const float2*>(row_d + 16 * c + 8 * j + 2 * t);
#pragma unroll
      for (int i = 0; i < 4; ++i) ds[j][i] = p[j][i] * (ds[j][i] - ((i & 1) ? d_pair.y : d_pair.x)) * d.scale;
    }
    a_of_pair<T>(a, ds[0], ds[1]);
    if constexpr (StoreDs) store_a_fragment(ds_tile, a, 16 * warp, 16 * c);
    accumulate_rows<T, HS>(dk, a, q_tile, 16 * c);
  }
}

// This warp's share of dQ from one query tile (queries q0 + 16 warp.., if
// inside T) and the block's 64 keys (from k0): dQ = dS K, dS read
// transposed from the tile's dS^T, K the block's rows; written as the
// pair's f32 partial, which dq_sum_kernel adds to the others. A key group
// whose keys all come after these queries stored no dS (its warp skipped
// the chunk, or the tile), and adds nothing.
template <typename T, int HS>
__device__ void dq_of_tile(float* dq_partials, const T* ds_tile, const T* k_rows, int64_t k0, int64_t q0,
                           const TcDims& d) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
  const int64_t first = q0 + 16 * warp;
  if (first >= d.T) return;
  float* rows = dq_partials + partial_offset(blockIdx.x, gridDim.y, k0 / kTile, q0 / kTile) * HS + 16 * warp * HS;
  // Half the head's columns at a time where the halves are whole pairs of
  // 8-column blocks (HS 32, 64): at HS 64, 16 accumulators live beside dK's
  // and dV's 64 and V's 16, not 32. ptxas (sm_90, bf16, 4 blocks an SM):
  // 128 registers and no spills, where the whole width at once spilled 72
  // bytes. The cost: dS read from shared memory twice.
  constexpr int kParts = (HS / 8) % 4 == 0 ? 2 : 1, kBlocks = HS / 8 / kParts;
#pragma unroll
  for (int part = 0; part < kParts; ++part) {
    float dq[kBlocks][4] = {};
#pragma unroll
    for (int kk = 0; kk < kWarps; ++kk) {
      if (first + 15 < k0 + 16 * kk) continue;
      uint32_t a[4];
      a_of_transposed(a, ds_tile, 16 * kk, 16 * warp);
#pragma unroll
      for (int nb = 0; nb < kBlocks; nb += 2) {
        uint32_t b[4];
        b_pair_of_columns<HS>(b, k_rows, 16 * kk, 8 * (part * kBlocks + nb));
        mma_pair<T>(dq[nb], dq[nb + 1], a, b);
      }
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      if (first + g + 8 * half >= d.T) continue;
#pragma unroll
      for (int nb = 0; nb < kBlocks; ++nb) {
        *reinterpret_cast<float2*>(rows + (g + 8 * half) * HS + 8 * (part * kBlocks + nb) + 2 * t) =
            make_float2(dq[nb][2 * half], dq[nb][2 * half + 1]);
      }
    }
  }
}

// dK and dV for 64 key rows; the query tiles that can see them stream by.
// MinBlocks asks ptxas to fit that many blocks on an SM, Unroll is how many
// of a tile's four chunks the loop unrolls (backward_more_warps()).
// FusedDq (SG_FLASH_FUSED_DQ=1): dQ's part from these keys too, as a partial
// per (key block, query tile) that dq_sum_kernel adds in order: each
// warp's dS^T chunks, already packed for dK's product, also go to a (64
// keys, 64 queries) tile in shared memory, and after the tile warp w takes
// dQ's 16 queries 16 w.. over the block's 64 keys (dS by a transposing
// ldmatrix, K the block's rows, both in shared memory). So dQ needs no
// kernel that computes S and dP again.
template <typename T, int HS, int MinBlocks, int Unroll, bool FusedDq>
__global__ void __launch_bounds__(kBlockThreads, MinBlocks)
    flash_backward_dkdv_tc_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D,
                                  float* dq_partials, TcDims d) {
  // Two buffers of a Q tile and a dO tile each, then two of the 64 rows' lse and D, then the block's keys,
  // then (FusedDq) the tile's dS^T.
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  T* tiles = reinterpret_cast<T*>(shared_bytes);
  float* row_values = reinterpret_cast<float*>(tiles + 4 * tile_elements<HS>());
  T* k_rows = reinterpret_cast<T*>(row_values + 4 * kTile);  // the block's 64 keys
  T* ds_tile = k_rows + tile_elements<HS>();
  const HeadRows head = head_rows<HS>(d, false);
  const int64_t row_stride = 3 * d.C, k0 = head.first, w0 = head.warp_first;
  const T* base = qkv + head.qkv_offset;
  const T* do_base = dout + head.out_offset;
  auto fetch = [&](int64_t q0, int buffer) {  // Q, dO and the rows' lse and D
    T* q_tile = tiles + 2 * buffer * tile_elements<HS>();
    fetch_tile<HS>(q_tile, base, row_stride, q0, d.T);
    fetch_tile<HS>(q_tile + tile_elements<HS>(), do_base, d.C, q0, d.T);
    fetch_row_values(row_values + 2 * buffer * kTile, lse + blockIdx.x * d.T, q0, d.T);
    fetch_row_values(row_values + (2 * buffer + 1) * kTile, D + blockIdx.x * d.T, q0, d.T);
    async_commit();
  };
  fetch_tile<HS>(k_rows, base + d.C, row_stride, k0, d.T);  // in the first tiles' group
  fetch(k0, 0);

  uint32_t v[HS / 16][4];
  load_a_rows<HS>(v, base + 2 * d.C, row_stride, w0, d.T);
  float dk[HS / 8][4] = {}, dv[HS / 8][4] = {};
  int buffer = 0;
  for (int64_t q0 = k0; q0 < d.T; q0 += kTile, buffer ^= 1) {
    advance_tiles(q0 + kTile < d.T, [&] { fetch(q0 + kTile, buffer ^ 1); });
    if constexpr (FusedDq) {
      dkdv_tile<T, HS, Unroll, true>(dk, dv, v, k_rows, ds_tile, tiles, row_values, buffer, q0, w0, d);
      __syncthreads();  // every warp's dS^T of the tile is in ds_tile
      dq_of_tile<T, HS>(dq_partials, ds_tile, k_rows, k0, q0, d);
    } else {
      dkdv_tile<T, HS, Unroll, false>(dk, dv, v, k_rows, ds_tile, tiles, row_values, buffer, q0, w0, d);
    }
  }
  const float one[2] = {1.0f, 1.0f};
  T* rows = dqkv + head.qkv_offset;
  write_rows<T, HS>(rows + d.C, row_stride, dk, w0, d.T, one);
  write_rows<T, HS>(rows + 2 * d.C, row_stride, dv, w0, d.T, one);
}


// D alone, 64 rows a block: the fused dQ's first kernel (otherwise the dQ
// kernel writes D as it starts).
template <typename T, int HS>
__global__ void __launch_bounds__(kBlockThreads) flash_row_dots_kernel(float* D, const T* dout, const T* out, TcDims d) {
  const HeadRows rows = head_rows<HS>(d, false);
  const int64_t w0 = rows.warp_first;
  uint32_t d_o[HS / 16][4];
  load_a_rows<HS>(d_o, dout + rows.out_offset, d.C, w0, d.T);
  float row_d[2];
  write_row_dots<T, HS>(row_d, D, d_o, out, w0, d);
}

// The fused dQ's last kernel: each query row's dQ = the sum of its query
// tile's partials over key blocks 0..i, added in that order (the same bits
// every run), rounded once into dqkv's q columns. A block a (batch, head)
// and query tile; a thread 4 columns of a row at a time.
template <typename T, int HS>
__global__ void __launch_bounds__(256) flash_dq_sum_kernel(T* dqkv, const float* dq_partials, TcDims d) {
  const int64_t b = blockIdx.x / d.NH, h = blockIdx.x % d.NH, i = blockIdx.y;
  const float* first = dq_partials + partial_offset(blockIdx.x, gridDim.y, 0, i) * HS;
  for (int e = threadIdx.x; e < kTile * HS / 4; e += blockDim.x) {
    const int row = e / (HS / 4), col = 4 * (e % (HS / 4));
    const int64_t q = i * kTile + row;
    if (q >= d.T) continue;
    float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int64_t j = 0; j <= i; ++j) {
      const float4 part = *reinterpret_cast<const float4*>(first + (j * kTile + row) * HS + col);
      sum.x += part.x, sum.y += part.y, sum.z += part.z, sum.w += part.w;
    }
    uint32_t* dst = reinterpret_cast<uint32_t*>(dqkv + (b * d.T + q) * 3 * d.C + h * HS + col);
    dst[0] = pack_pair<T>(sum.x, sum.y);
    dst[1] = pack_pair<T>(sum.z, sum.w);
  }
}

// dQ for 64 query rows; the key tiles they see stream by. (MinBlocks and
// Unroll as dK/dV's.)
// It runs first and also writes D = rowsum(dO * O) for its rows, which it
// and dK/dV need: computed from dO's fragments, already in registers, and
// O's, it takes no kernel of its own and no second read of dO.
template <typename T, int HS, int MinBlocks, int Unroll>
__global__ void __launch_bounds__(kBlockThreads, MinBlocks)
    flash_backward_dq_tc_kernel(T* dqkv, float* D, const T* dout, const T* qkv, const T* out, const float* lse,
                                TcDims d) {
  extern __shared__ __align__(128) unsigned char shared_bytes[];  // two buffers of a K tile and a V tile each
  T* tiles = reinterpret_cast<T*>(shared_bytes);
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
  const HeadRows rows = head_rows<HS>(d, true);
  const int64_t row_stride = 3 * d.C, q0 = rows.first, w0 = rows.warp_first;
  const T* base = qkv + rows.qkv_offset;
  fetch_keys_values<HS>(tiles, 0, base, d.C, 0, d.T);

  uint32_t q[HS / 16][4], d_o[HS / 16][4];
  load_a_rows<HS>(q, base, row_stride, w0, d.T);
  load_a_rows<HS>(d_o, dout + rows.out_offset, d.C, w0, d.T);
  float row_lse[2], row_d[2];  // rows g and g + 8
  write_row_dots<T, HS>(row_d, D, d_o, out, w0, d);
  load_row_lse(row_lse, lse, w0, d);
  float dq[HS / 8][4] = {};
  const float scale_log2 = d.scale * kLog2e;
  for_each_key_tile<HS>(tiles, base, d, q0, w0, [&](int64_t k0, const T* k_tile, const T* v_tile) {
    const bool masked = tile_masked(k0, w0, d.T);
    const int diagonal = int(k0 - w0);                   // key - query = diagonal + column - row
    const int keys = int(min(d.T - k0, int64_t(kTile)));  // the tile's columns inside T
    // 16 keys (columns 16 c..16 c + 15) at a time, as dK/dV's queries.
#pragma unroll Unroll
    for (int c = 0; c < kTile / 16; ++c) {
      // Every key of the chunk after every query of this warp, or past T: nothing to add.
      if (masked && (diagonal + 16 * c > 15 || 16 * c >= keys)) continue;
      float p[2][4], ds[2][4];  // P, then dP and dS: (16 queries, 16 keys)
      scores_pair<T, HS>(p[0], p[1], q, k_tile, 16 * c);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int column = 16 * c + 8 * j + 2 * t + (i & 1), row = g + (i >= 2 ? 8 : 0);
          p[j][i] = !masked || (diagonal + column <= row && column < keys)
                        ? fast_exp2(p[j][i] * scale_log2 - row_lse[i / 2])
                        : 0.0f;
        }
      }
      scores_pair<T, HS>(ds[0], ds[1], d_o, v_tile, 16 * c);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
#pragma unroll
        for (int i = 0; i < 4; ++i) ds[j][i] = p[j][i] * (ds[j][i] - row_d[i / 2]) * d.scale;
      }
      uint32_t a[4];
      a_of_pair<T>(a, ds[0], ds[1]);
      accumulate_rows<T, HS>(dq, a, k_tile, 16 * c);
    }
  });
  const float one[2] = {1.0f, 1.0f};
  write_rows<T, HS>(dqkv + rows.qkv_offset, row_stride, dq, w0, d.T, one);
}

// Dynamic shared memory of each kernel (the carving above).
template <int HS, typename T>
constexpr size_t forward_shared_bytes() {  // two buffers of two tiles, and the block's rows
  return 5 * tile_bytes<HS, T>();
}
template <int HS, typename T>
constexpr size_t dq_shared_bytes() {  // two buffers of two tiles
  return 4 * tile_bytes<HS, T>();
}
template <int HS, typename T>
constexpr size_t backward_shared_bytes() {  // dK/dV's: also two buffers of 64 lse and D values
  return 5 * tile_bytes<HS, T>() + 4 * kTile * sizeof(float);
}
template <int HS, typename T>
constexpr size_t fused_dq_shared_bytes() {  // dK/dV's, and the tile's dS^T
  return backward_shared_bytes<HS, T>() + ds_tile_bytes<T>();
}

// A launch may ask for at most 48 KiB of dynamic shared memory unless the
// kernel opts in to more (cudaFuncSetAttribute), which only the fused dQ's
// dK/dV does (55 KiB at head size 64: 4 blocks still fit an H100's 227 KiB
// an SM, 2 an A100's 163). The emulator refuses a launch past its limit
// when a test makes it; this refuses the build, at the largest head size
// (bf16 and f16 carve the same bytes).
static_assert(backward_shared_bytes<kFlashTensorCoreMaxHeadSize, __nv_bfloat16>() <= 48 * 1024 &&
                  forward_shared_bytes<kFlashTensorCoreMaxHeadSize, __nv_bfloat16>() <= 48 * 1024,
              "the tensor-core kernels need more than 48 KiB of shared memory");
static_assert(fused_dq_shared_bytes<kFlashTensorCoreMaxHeadSize, __nv_bfloat16>() <= 227 * 1024 / 4,
              "the fused dQ's dK/dV kernel no longer fits 4 blocks an SM");

// Calls fn(std::integral_constant<int, HS>{}) for a head size the kernels have.
template <typename Fn>
void with_head_size(int64_t hs, Fn&& fn) {
  switch (hs) {
    case 16: fn(std::integral_constant<int, 16>{}); return;
    case 32: fn(std::integral_constant<int, 32>{}); return;
    case 48: fn(std::integral_constant<int, 48>{}); return;
    case 64: fn(std::integral_constant<int, 64>{}); return;
    default: SG_FAIL("tensor-core attention: head size ", hs, " is not 16, 32, 48 or 64");
  }
}

// Whether the forward is built for one more block an SM (4 blocks instead
// of 3 at GPT-2's head size; ptxas, sm_90: 123 registers against 138, no
// spills either way since the diagonal tile's hidden chunks are skipped;
// 128 and 8 bytes of spill loads against 144 before);
// SG_FLASH_FORWARD_MORE_WARPS=0 builds it for its registers. Read at each
// call, so that bench_attention can time both in one process. Measured on
// an H100 (docs/performance.md), a GPT-2 step took 19.85 ms with more
// warps, 20.17 for the registers (run 7); with Q in shared memory, 18.9
// and 19.0 (runs 10 and 11: within the runs' spread).
bool forward_more_warps() { return env_switch_on("SG_FLASH_FORWARD_MORE_WARPS"); }

// Whether the backward kernels are built for more warps an SM: dK/dV 4
// blocks (128 registers, no spills, the chunk loop not unrolled) and dQ 5
// (96 registers, 56 bytes of spill loads), against 3 and 4 with the loops
// unrolled (167 and 126 registers, no spills; ptxas, sm_90, GPT-2's head
// size). More warps hide more of each one's waits; on an H100 a GPT-2 step
// took 18.9 ms against 19.1 (run 10, docs/performance.md), and each
// kernel's other shapes tried in run 11 were no faster.
// SG_FLASH_BACKWARD_MORE_WARPS=0 builds the fewer; read at each call.
bool backward_more_warps() { return env_switch_on("SG_FLASH_BACKWARD_MORE_WARPS"); }

// SG_FLASH_FUSED_DQ=1: dQ made inside the dK/dV kernel (its partials summed
// after), instead of a kernel of its own that computes S and dP again. Off
// until timed on a GPU; read at each call.
bool fused_dq() { return env_switch_opted_in("SG_FLASH_FUSED_DQ"); }

}  // namespace

bool flash_tensor_cores_apply(DType dtype, int64_t head_size) {
  return env_switch_on("SG_FLASH_TENSOR_CORES") && (dtype == DType::bf16 || dtype == DType::f16) &&
         head_size % 16 == 0 && head_size >= 16 && head_size <= kFlashTensorCoreMaxHeadSize;
}

void flash_forward_tensor_cores(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                                DType dtype, cudaStream_t stream) {
  if (flash_forward_wgmma(out, lse, qkv, B, T, C, NH, dtype, stream)) return;
  const TcDims d{T, C, NH, 1.0f / sqrtf(float(C / NH))};
  with_half_type(dtype, [&](auto tag) {
    using Ty = decltype(tag);
    with_head_size(C / NH, [&](auto head_size) {
      auto launch = [&](auto min_blocks) {
        constexpr int HS = decltype(head_size)::value;
        flash_forward_tc_kernel<Ty, HS, decltype(min_blocks)::value>
            <<<grid_for(B, T, NH), kBlockThreads, forward_shared_bytes<HS, Ty>(), stream>>>(
                static_cast<Ty*>(out), lse, static_cast<const Ty*>(qkv), d);
      };
      if (forward_more_warps()) launch(std::integral_constant<int, 4>{});
      else launch(std::integral_constant<int, 3>{});
    });
  });
  SG_CHECK_LAUNCH();
}

int64_t flash_dq_partial_floats(int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype) {
  if (!fused_dq() || NH <= 0 || C % NH != 0 || !flash_tensor_cores_apply(dtype, C / NH)) return 0;
  const int64_t tiles = (T + kTile - 1) / kTile;
  return B * NH * (tiles * (tiles + 1) / 2) * kTile * (C / NH);
}

void flash_backward_tensor_cores(void* dqkv, float* row_dots, const void* dout, const void* qkv, const void* out,
                                 const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype,
                                 cudaStream_t stream, float* dq_partials) {
  if (flash_backward_wgmma(dqkv, row_dots, dout, qkv, out, lse, B, T, C, NH, dtype, stream)) return;
  const TcDims d{T, C, NH, 1.0f / sqrtf(float(C / NH))};
  with_half_type(dtype, [&](auto tag) {
    using Ty = decltype(tag);
    const auto* dO = static_cast<const Ty*>(dout);
    const auto* x = static_cast<const Ty*>(qkv);
    const auto* o = static_cast<const Ty*>(out);
    with_head_size(C / NH, [&](auto head_size) {
      auto* dx = static_cast<Ty*>(dqkv);
      // Each kernel's blocks an SM and how many of a tile's 16-row chunks its loop unrolls.
      auto launch = [&](auto dkdv_blocks, auto dkdv_unroll, auto dq_blocks, auto dq_unroll) {
        constexpr int HS = decltype(head_size)::value;
        constexpr int kBlocks = decltype(dkdv_blocks)::value, kUnroll = decltype(dkdv_unroll)::value;
        if (dq_partials != nullptr) {  // D, then dK/dV with dQ's partials, then their sums
          flash_row_dots_kernel<Ty, HS><<<grid_for(B, T, NH), kBlockThreads, 0, stream>>>(row_dots, dO, o, d);
          SG_CHECK_LAUNCH();
          constexpr size_t bytes = fused_dq_shared_bytes<HS, Ty>();
          CUDA_CHECK(cudaFuncSetAttribute(flash_backward_dkdv_tc_kernel<Ty, HS, kBlocks, kUnroll, true>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
          flash_backward_dkdv_tc_kernel<Ty, HS, kBlocks, kUnroll, true>
              <<<grid_for(B, T, NH), kBlockThreads, bytes, stream>>>(dx, dO, x, lse, row_dots, dq_partials, d);
          SG_CHECK_LAUNCH();
          flash_dq_sum_kernel<Ty, HS><<<grid_for(B, T, NH), 256, 0, stream>>>(dx, dq_partials, d);
          SG_CHECK_LAUNCH();
          return;
        }
        // dQ first: it writes D (row_dots), which dK/dV reads.
        flash_backward_dq_tc_kernel<Ty, HS, decltype(dq_blocks)::value, decltype(dq_unroll)::value>
            <<<grid_for(B, T, NH), kBlockThreads, dq_shared_bytes<HS, Ty>(), stream>>>(dx, row_dots, dO, x, o,
                                                                                           lse, d);
        SG_CHECK_LAUNCH();
        flash_backward_dkdv_tc_kernel<Ty, HS, kBlocks, kUnroll, false>
            <<<grid_for(B, T, NH), kBlockThreads, backward_shared_bytes<HS, Ty>(), stream>>>(dx, dO, x, lse, row_dots,
                                                                                            nullptr, d);
        SG_CHECK_LAUNCH();
      };
      using std::integral_constant;
      if (backward_more_warps()) {
        launch(integral_constant<int, 4>{}, integral_constant<int, 1>{}, integral_constant<int, 5>{},
               integral_constant<int, 1>{});
      } else {
        launch(integral_constant<int, 3>{}, integral_constant<int, kTile / 16>{}, integral_constant<int, 4>{},
               integral_constant<int, kTile / 16>{});
      }
    });
  });
}

}  // namespace sg::cuda
