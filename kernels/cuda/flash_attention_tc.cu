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
// no atomics, the same bits every run.
//
// Shapes (per (batch, head), HS = head size, 16-64):
//   forward:  S = Q_w K^T (16 x 64), P = exp(S scale - m), O_w += P V (16 x HS)
//   dQ:       S = Q_w K^T, P, dP = dO_w V^T, dS = P (dP - D) scale,
//             dQ_w += dS K; and D = rowsum(dO_w O_w)
//   dK, dV:   S^T = K_w Q^T, P^T = exp(S^T scale - lse), dV_w += P^T dO,
//             dP^T = V_w dO^T, dS^T = P^T (dP^T - D) scale, dK_w += dS^T Q
#include "kernels/cuda/flash_attention_tc.h"

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/env_switch.h"

namespace sg::cuda {
namespace {

constexpr int kWarps = 4, kBlockThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps;  // rows a block owns: 16 per warp
constexpr int kTile = 64;           // the other side's rows per step
constexpr int kTileBlocks = kTile / 8;
constexpr float kLog2e = 1.4426950408889634f;

struct TcDims {
  int64_t T, C, NH;
  float scale;
};

// A shared tile's row stride: 8 elements (16 bytes) past the head size, so
// the fragment loads of the 8 row groups of a warp land in different banks.
template <int HS>
constexpr int stride_of() {
  return HS + 8;
}

template <int HS, typename T>
constexpr size_t tile_bytes() {
  return size_t(kTile) * stride_of<HS>() * sizeof(T);
}

template <int HS>
constexpr int tile_elements() {
  return kTile * stride_of<HS>();
}

// Starts tile[r][0, HS) = src row (first + r) for r < kTile (rows
// row_stride apart), 0 past T: 16-byte cp.async copies (the caller checked
// the alignment), in flight until async_wait (kernels/cuda/async_copy.cuh).
template <int HS, typename T>
__device__ void fetch_tile(T* tile, const T* src, int64_t row_stride, int64_t first, int64_t T_) {
  constexpr int kVectors = HS * int(sizeof(T)) / 16;
  constexpr int kPerVector = 16 / int(sizeof(T));
  for (int index = threadIdx.x; index < kTile * kVectors; index += blockDim.x) {
    const int r = index / kVectors, v = index % kVectors;
    const bool inside = first + r < T_;
    const T* from = inside ? src + (first + r) * row_stride + v * kPerVector : src;
    async_copy<16>(tile + r * stride_of<HS>() + v * kPerVector, from, inside);
  }
}

// Starts values[r] = src[first + r] for r < kTile, 0 past T (4-byte copies).
__device__ void fetch_row_values(float* values, const float* src, int64_t first, int64_t T_) {
  for (int r = threadIdx.x; r < kTile; r += blockDim.x) {
    const bool inside = first + r < T_;
    async_copy<4>(values + r, inside ? src + first + r : src, inside);
  }
}

// Starts keys k0.. (K, then V: `base` is the head's q columns of row 0) into
// buffer `buffer` of `tiles` (two tiles a buffer), as one cp.async group.
template <int HS, typename T>
__device__ void fetch_keys_values(T* tiles, int buffer, const T* base, int64_t C, int64_t k0, int64_t T_) {
  T* k_tile = tiles + 2 * buffer * tile_elements<HS>();
  fetch_tile<HS>(k_tile, base + C, 3 * C, k0, T_);
  fetch_tile<HS>(k_tile + tile_elements<HS>(), base + 2 * C, 3 * C, k0, T_);
  async_commit();
}

// The top of each step over double-buffered tiles (kernels/cuda/async_copy.cuh):
// once every warp is done with the other buffer, starts the next tile into
// it (when there is one: fetch_next) and waits for this step's; on return
// this step's tile is visible to the whole block.
template <typename FetchNext>
__device__ void advance_tiles(bool has_next, FetchNext&& fetch_next) {
  __syncthreads();
  if (has_next) {
    fetch_next();
    async_wait<1>();
  } else {
    async_wait<0>();
  }
  __syncthreads();
}

// The A fragments of 16 rows (first..first + 15) of src: frag[kk] holds
// columns 16 kk .. 16 kk + 15. Rows past T are 0.
template <int HS, typename T>
__device__ void load_a_rows(uint32_t (&frag)[HS / 16][4], const T* src, int64_t row_stride, int64_t first,
                            int64_t T_) {
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
#pragma unroll
  for (int kk = 0; kk < HS / 16; ++kk) {
#pragma unroll
    for (int reg = 0; reg < 4; ++reg) {
      const int64_t row = first + g + ((reg & 1) ? 8 : 0);
      const int col = 16 * kk + 2 * t + ((reg & 2) ? 8 : 0);
      frag[kk][reg] = row < T_ ? load_pair(src + row * row_stride + col) : 0u;
    }
  }
}

// The B operands of two products side by side, each 16 x 8, from a shared
// tile X in one ldmatrix: b[0], b[1] the first's, b[2], b[3] the second's.
// Lane 8 i + r names row r of 8x8 matrix i.
//
// B = X^T: B's rows are X's columns k0..k0+15, its columns X's rows
// n0..n0+7 (then n0+8..n0+15). An 8x8 block of X, read as stored, is a B^T
// fragment: matrix i is X's rows n0 + 8 (i / 2), columns k0 + 8 (i % 2).
template <int HS, typename T>
__device__ void b_pair_of_rows(uint32_t (&b)[4], const T* tile, int n0, int k0) {
  const int lane = threadIdx.x % 32, i = lane / 8, r = lane % 8;
  ldmatrix_x4(b, tile + (n0 + 8 * (i / 2) + r) * stride_of<HS>() + k0 + 8 * (i % 2));
}

// B = X: B's rows are X's rows k0..k0+15, its columns X's columns n0..n0+7
// (then n0+8..n0+15); the transposing load gives a column of X to a lane:
// matrix i is X's rows k0 + 8 (i % 2), columns n0 + 8 (i / 2).
template <int HS, typename T>
__device__ void b_pair_of_columns(uint32_t (&b)[4], const T* tile, int k0, int n0) {
  const int lane = threadIdx.x % 32, i = lane / 8, r = lane % 8;
  ldmatrix_x4<true>(b, tile + (k0 + 8 * (i % 2) + r) * stride_of<HS>() + n0 + 8 * (i / 2));
}

// Two products sharing their A operand, the B operands from one ldmatrix.
template <typename T>
__device__ __forceinline__ void mma_pair(float (&d0)[4], float (&d1)[4], const uint32_t (&a)[4],
                                         const uint32_t (&b)[4]) {
  const uint32_t first[2] = {b[0], b[1]}, second[2] = {b[2], b[3]};
  mma_16816<T>(d0, a, first);
  mma_16816<T>(d1, a, second);
}

// The A fragment (16 x 16) of two 16 x 8 accumulator tiles side by side
// (columns 0-7 in d0, 8-15 in d1), rounded to T.
template <typename T>
__device__ __forceinline__ void a_of_pair(uint32_t (&a)[4], const float (&d0)[4], const float (&d1)[4]) {
  a[0] = pack_pair<T>(d0[0], d0[1]);
  a[1] = pack_pair<T>(d0[2], d0[3]);
  a[2] = pack_pair<T>(d1[0], d1[1]);
  a[3] = pack_pair<T>(d1[2], d1[3]);
}

// d0, d1 (16 x 8 each) = rows (A fragments, 16 x HS) times the tile's rows
// n0..n0 + 7 and n0 + 8..n0 + 15, transposed: 16 columns of scores.
template <typename T, int HS>
__device__ __forceinline__ void scores_pair(float (&d0)[4], float (&d1)[4], const uint32_t (&rows)[HS / 16][4],
                                            const T* tile, int n0) {
#pragma unroll
  for (int i = 0; i < 4; ++i) d0[i] = d1[i] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < HS / 16; ++kk) {
    uint32_t b[4];
    b_pair_of_rows<HS>(b, tile, n0, 16 * kk);
    mma_pair<T>(d0, d1, rows[kk], b);
  }
}

// The same with the A operand read from rows r0..r0 + 15 of a shared tile
// (ldmatrix: matrix i is rows r0 + 8 (i % 2), columns 16 kk + 8 (i / 2)),
// for a kernel short of registers: 16 fewer live, 4 more ldmatrix.
template <typename T, int HS>
__device__ __forceinline__ void scores_pair(float (&d0)[4], float (&d1)[4], const T* rows_tile, int r0,
                                            const T* tile, int n0) {
  const int lane = threadIdx.x % 32, i = lane / 8, r = lane % 8;
#pragma unroll
  for (int e = 0; e < 4; ++e) d0[e] = d1[e] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < HS / 16; ++kk) {
    uint32_t a[4], b[4];
    ldmatrix_x4(a, rows_tile + (r0 + 8 * (i % 2) + r) * stride_of<HS>() + 16 * kk + 8 * (i / 2));
    b_pair_of_rows<HS>(b, tile, n0, 16 * kk);
    mma_pair<T>(d0, d1, a, b);
  }
}


// out (16 x HS) += a (an A fragment, 16 x 16) times the tile's rows k0..k0 + 15 (16 x HS).
template <typename T, int HS>
__device__ __forceinline__ void accumulate_rows(float (&out)[HS / 8][4], const uint32_t (&a)[4], const T* tile,
                                                int k0) {
#pragma unroll
  for (int nb = 0; nb < HS / 8; nb += 2) {  // HS / 8 is even: HS is a multiple of 16
    uint32_t b[4];
    b_pair_of_columns<HS>(b, tile, k0, 8 * nb);
    mma_pair<T>(out[nb], out[nb + 1], a, b);
  }
}

// out (16 x HS) += p (16 x 64, accumulators) times tile (64 x HS), over
// p's first `chunks` 16 columns (the rest are 0).
template <typename T, int HS>
__device__ void accumulate(float (&out)[HS / 8][4], const float (&p)[kTileBlocks][4], const T* tile, int chunks) {
#pragma unroll
  for (int kk = 0; kk < kTile / 16; ++kk) {
    if (kk >= chunks) continue;
    uint32_t a[4];
    a_of_pair<T>(a, p[2 * kk], p[2 * kk + 1]);
    accumulate_rows<T, HS>(out, a, tile, 16 * kk);
  }
}

// dst rows first + g and first + g + 8 (< T), columns of this lane, = acc * factor[half].
template <typename T, int HS>
__device__ void write_rows(T* dst, int64_t row_stride, const float (&acc)[HS / 8][4], int64_t first, int64_t T_,
                           const float (&factor)[2]) {
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t row = first + g + 8 * half;
    if (row >= T_) continue;
#pragma unroll
    for (int nb = 0; nb < HS / 8; ++nb) {
      *reinterpret_cast<uint32_t*>(dst + row * row_stride + 8 * nb + 2 * t) =
          pack_pair<T>(acc[nb][2 * half] * factor[half], acc[nb][2 * half + 1] * factor[half]);
    }
  }
}

// The key tiles that the query rows q0..q0 + 63 of a block see (keys 0 up
// to their last row), K and V double-buffered: body(k0, k_tile, v_tile) runs
// for each tile that this warp's rows (w0..w0 + 15) see. The caller has
// started tile 0 into buffer 0 (fetch_keys_values), so that its own loads
// overlap it. Every thread of the block must call this.
template <int HS, typename T, typename Body>
__device__ void for_each_key_tile(T* tiles, const T* base, const TcDims& d, int64_t q0, int64_t w0, Body&& body) {
  const int64_t block_last = min(d.T - 1, q0 + kRows - 1);
  int buffer = 0;
  for (int64_t k0 = 0; k0 <= block_last; k0 += kTile, buffer ^= 1) {
    // The next tile fills while this one is computed on.
    advance_tiles(k0 + kTile <= block_last,
                  [&] { fetch_keys_values<HS>(tiles, buffer ^ 1, base, d.C, k0 + kTile, d.T); });
    if (k0 > w0 + 15) continue;  // every key is after every row of this warp
    const T* k_tile = tiles + 2 * buffer * tile_elements<HS>();
    body(k0, k_tile, k_tile + tile_elements<HS>());
  }
}

// Whether the key tile at k0 has keys that some of this warp's rows (w0..)
// must not see: it crosses the diagonal or T. The same for the whole warp.
__device__ __forceinline__ bool tile_masked(int64_t k0, int64_t w0, int64_t T_) {
  return k0 + kTile - 1 > w0 || k0 + kTile > T_;
}

// Whether element i of score block nb (16 rows from w0, 64 keys from k0) is
// a key its row sees: causal, and inside T.
__device__ __forceinline__ bool key_visible(int64_t k0, int64_t w0, int nb, int i, int64_t T_) {
  const int lane = threadIdx.x % 32;
  const int64_t key = k0 + 8 * nb + 2 * (lane % 4) + (i & 1), row = w0 + (lane >> 2) + (i >= 2 ? 8 : 0);
  return key <= row && key < T_;
}

// 2^x in one special-function-unit instruction, results below f32's normal
// range flushed to 0 (exp2f adds a few instructions to keep them, which a
// softmax never needs: its exponents are <= 0 and such terms are as good as
// 0 beside the row's largest, 1). 2^-inf = 0, as the masked scores need.
__device__ __forceinline__ float fast_exp2(float x) {
#ifdef SG_CUDA_EMULATOR
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// The largest of x over the four lanes that share a row.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// The forward's online softmax for a warp's 16 rows (from w0) and one key
// tile (64 keys from k0): s, the raw scores, becomes exp2(s scale log2 e
// - m) with m the rows' new running maxima (log2 units), and the earlier
// output o and sums l are rescaled to those maxima; l gains this lane's
// part of the tile's sums. Rows g and g + 8 are m[0], m[1].
template <int HS>
__device__ void online_softmax(float (&s)[kTileBlocks][4], float (&o)[HS / 8][4], float (&m)[2], float (&l)[2],
                               int64_t k0, int64_t w0, int64_t T_, float scale_log2) {
  const bool masked = tile_masked(k0, w0, T_);  // else every key is seen: no comparisons
  float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int nb = 0; nb < kTileBlocks; ++nb) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[nb][i] = !masked || key_visible(k0, w0, nb, i, T_) ? s[nb][i] * scale_log2 : -INFINITY;
      tile_max[i / 2] = fmaxf(tile_max[i / 2], s[nb][i]);
    }
  }
  float correction[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float m_new = fmaxf(m[r], quad_max(tile_max[r]));
    correction[r] = m_new == -INFINITY ? 1.0f : fast_exp2(m[r] - m_new);
    m[r] = m_new;
    l[r] *= correction[r];
  }
#pragma unroll
  for (int nb = 0; nb < HS / 8; ++nb) {
#pragma unroll
    for (int i = 0; i < 4; ++i) o[nb][i] *= correction[i / 2];
  }
#pragma unroll
  for (int nb = 0; nb < kTileBlocks; ++nb) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[nb][i] = m[i / 2] == -INFINITY ? 0.0f : fast_exp2(s[nb][i] - m[i / 2]);
      l[i / 2] += s[nb][i];
    }
  }
}

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
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
  const int64_t b = blockIdx.x / d.NH, h = blockIdx.x % d.NH, row_stride = 3 * d.C;
  const T* base = qkv + b * d.T * row_stride + h * HS;
  const int64_t q0 = int64_t(gridDim.y - 1 - blockIdx.y) * kRows, w0 = q0 + 16 * warp;
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
      float s[kTileBlocks][4];  // (16 queries, 64 keys)
#pragma unroll
      for (int nb = 0; nb < kTileBlocks; nb += 2) {
        if (nb / 2 < chunks) {
          scores_pair<T, HS>(s[nb], s[nb + 1], q_rows, 16 * warp, k_tile, 8 * nb);
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i) s[nb][i] = s[nb + 1][i] = 0.0f;  // keys no row sees: -inf below
        }
      }
      online_softmax<HS>(s, o, m, l, k0, w0, d.T, scale_log2);
      accumulate<T, HS>(o, s, v_tile, chunks);
    };
    // Every chunk but on the diagonal (or at T); there, those up to the
    // warp's last row (w0 - k0 is a multiple of 16) and inside T. Two
    // copies of the step, so the common one has no chunk tests at all.
    if (tile_masked(k0, w0, d.T)) step(int(min(int64_t(kTile / 16), min((w0 - k0) / 16 + 1, (d.T - k0 + 15) / 16))));
    else step(kTile / 16);
  });
  float inverse[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    inverse[r] = 1.0f / l[r];
    const int64_t row = w0 + g + 8 * r;
    if (t == 0 && row < d.T) lse[blockIdx.x * d.T + row] = (m[r] + log2f(l[r])) / kLog2e;
  }
  write_rows<T, HS>(out + b * d.T * d.C + h * HS, d.C, o, w0, d.T, inverse);
}

// dK and dV for 64 key rows; the query tiles that can see them stream by.
// MinBlocks asks ptxas to fit that many blocks on an SM, Unroll is how many
// of a tile's four chunks the loop unrolls (backward_more_warps()).
template <typename T, int HS, int MinBlocks, int Unroll>
__global__ void __launch_bounds__(kBlockThreads, MinBlocks)
    flash_backward_dkdv_tc_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D, TcDims d) {
  // Two buffers of a Q tile and a dO tile each, then two of the 64 rows' lse and D, then the block's keys.
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  T* tiles = reinterpret_cast<T*>(shared_bytes);
  float* row_values = reinterpret_cast<float*>(tiles + 4 * tile_elements<HS>());
  T* k_rows = reinterpret_cast<T*>(row_values + 4 * kTile);  // the block's 64 keys
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
  const int64_t b = blockIdx.x / d.NH, h = blockIdx.x % d.NH, row_stride = 3 * d.C;
  const T* base = qkv + b * d.T * row_stride + h * HS;
  const T* do_base = dout + b * d.T * d.C + h * HS;
  const int64_t k0 = int64_t(blockIdx.y) * kRows, w0 = k0 + 16 * warp;  // the first blocks see the most queries
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
  const float scale_log2 = d.scale * kLog2e;
  int buffer = 0;
  for (int64_t q0 = k0; q0 < d.T; q0 += kTile, buffer ^= 1) {
    advance_tiles(q0 + kTile < d.T, [&] { fetch(q0 + kTile, buffer ^ 1); });
    if (q0 + kTile - 1 < w0) continue;  // every query is before every key of this warp
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
      accumulate_rows<T, HS>(dk, a, q_tile, 16 * c);
    }
  }
  const float one[2] = {1.0f, 1.0f};
  T* rows = dqkv + b * d.T * row_stride + h * HS;
  write_rows<T, HS>(rows + d.C, row_stride, dk, w0, d.T, one);
  write_rows<T, HS>(rows + 2 * d.C, row_stride, dv, w0, d.T, one);
}

// D = rowsum(dO * O) for this lane's rows g and g + 8 of the 16 whose A
// fragments are d_o and o: a lane holds four columns of each row a kk, the
// four lanes of a quad the rest (mma.cuh).
template <typename T, int HS>
__device__ void row_dots(float (&dots)[2], const uint32_t (&d_o)[HS / 16][4], const uint32_t (&o)[HS / 16][4]) {
  dots[0] = dots[1] = 0.0f;
#pragma unroll
  for (int kk = 0; kk < HS / 16; ++kk) {
#pragma unroll
    for (int reg = 0; reg < 4; ++reg) {  // register reg holds row g + 8 (reg & 1)
      float d0, d1, o0, o1;
      unpack_pair<T>(d_o[kk][reg], d0, d1);
      unpack_pair<T>(o[kk][reg], o0, o1);
      dots[reg & 1] += d0 * o0 + d1 * o1;
    }
  }
  dots[0] = quad_sum(dots[0]);
  dots[1] = quad_sum(dots[1]);
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
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
  const int64_t b = blockIdx.x / d.NH, h = blockIdx.x % d.NH, row_stride = 3 * d.C;
  const T* base = qkv + b * d.T * row_stride + h * HS;
  const int64_t q0 = int64_t(gridDim.y - 1 - blockIdx.y) * kRows, w0 = q0 + 16 * warp;
  fetch_keys_values<HS>(tiles, 0, base, d.C, 0, d.T);

  uint32_t q[HS / 16][4], d_o[HS / 16][4];
  load_a_rows<HS>(q, base, row_stride, w0, d.T);
  load_a_rows<HS>(d_o, dout + b * d.T * d.C + h * HS, d.C, w0, d.T);
  float row_lse[2], row_d[2];  // rows g and g + 8
  {
    uint32_t o[HS / 16][4];
    load_a_rows<HS>(o, out + b * d.T * d.C + h * HS, d.C, w0, d.T);
    row_dots<T, HS>(row_d, d_o, o);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = w0 + g + 8 * r;
    row_lse[r] = row < d.T ? lse[blockIdx.x * d.T + row] * kLog2e : 0.0f;
    if (lane % 4 == 0 && row < d.T) D[blockIdx.x * d.T + row] = row_d[r];
  }
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
  write_rows<T, HS>(dqkv + b * d.T * row_stride + h * HS, row_stride, dq, w0, d.T, one);
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

// A launch may ask for at most 48 KiB of dynamic shared memory unless the
// kernel opts in to more (cudaFuncSetAttribute), which these do not. The
// emulator refuses such a launch when a test makes it; this refuses the
// build, at the largest head size (bf16 and f16 carve the same bytes).
static_assert(backward_shared_bytes<kFlashTensorCoreMaxHeadSize, __nv_bfloat16>() <= 48 * 1024 &&
                  forward_shared_bytes<kFlashTensorCoreMaxHeadSize, __nv_bfloat16>() <= 48 * 1024,
              "the tensor-core kernels need more than 48 KiB of shared memory");

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

// The 16-bit storage type of dtype, as a tag.
template <typename Fn>
void with_half_type(DType dtype, Fn&& fn) {
  if (dtype == DType::bf16) fn(__nv_bfloat16{});
  else if (dtype == DType::f16) fn(__half{});
  else SG_FAIL("tensor-core attention: dtype ", dtype_name(dtype), " is not bf16 or f16");
}

// x: the (batch, head), y: the block of rows. The GPU starts blocks x first,
// so every head's block with the most tiles to visit (the last queries; for
// dK/dV the first keys) starts before any lighter one: longest first, which
// leaves the shortest tail when the grid runs out.
dim3 grid_for(int64_t B, int64_t T, int64_t NH) {
  const int64_t row_blocks = (T + kRows - 1) / kRows;
  SG_CHECK(row_blocks <= 65535, "fused attention: T = ", T, " needs ", row_blocks,
           " blocks of rows, more than the grid's 65535");
  return dim3(unsigned(B * NH), unsigned(row_blocks));
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

}  // namespace

bool flash_tensor_cores_apply(DType dtype, int64_t head_size) {
  static const bool enabled = env_switch_on("SG_FLASH_TENSOR_CORES");
  return enabled && (dtype == DType::bf16 || dtype == DType::f16) && head_size % 16 == 0 && head_size >= 16 &&
         head_size <= kFlashTensorCoreMaxHeadSize;
}

void flash_forward_tensor_cores(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                                DType dtype, cudaStream_t stream) {
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

void flash_backward_tensor_cores(void* dqkv, float* row_dots, const void* dout, const void* qkv, const void* out,
                                 const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype,
                                 cudaStream_t stream) {
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
        // dQ first: it writes D (row_dots), which dK/dV reads.
        flash_backward_dq_tc_kernel<Ty, HS, decltype(dq_blocks)::value, decltype(dq_unroll)::value>
            <<<grid_for(B, T, NH), kBlockThreads, dq_shared_bytes<HS, Ty>(), stream>>>(dx, row_dots, dO, x, o,
                                                                                           lse, d);
        SG_CHECK_LAUNCH();
        flash_backward_dkdv_tc_kernel<Ty, HS, decltype(dkdv_blocks)::value, decltype(dkdv_unroll)::value>
            <<<grid_for(B, T, NH), kBlockThreads, backward_shared_bytes<HS, Ty>(), stream>>>(dx, dO, x, lse, row_dots,
                                                                                            d);
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
