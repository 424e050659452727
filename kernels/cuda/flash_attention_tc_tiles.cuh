// Internal to kernels/cuda/flash_attention_tc.cu: the tiles, fragments and
// online softmax its kernels are made of (the layout is described at the
// top of that file). Every kernel is 4 warps of 16 rows each; the other
// side streams through shared memory 64 rows at a time.
#pragma once

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"
#include "kernels/cuda/mma.cuh"
#include "kernels/dtype.h"

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

// Where a block of the attention kernels works: its head's columns in qkv
// (rows of 3 C) and in out, dout and the like (rows of C), and its 64 rows
// from `first`, this warp's 16 from `warp_first`. Blocks over queries run
// the last rows first (grid_for orders them longest first); blocks over
// keys (dK/dV) the first keys first, which see the most queries.
struct HeadRows {
  int64_t qkv_offset, out_offset, first, warp_first;
};

template <int HS>
__device__ __forceinline__ HeadRows head_rows(const TcDims& d, bool over_queries) {
  const int64_t b = blockIdx.x / d.NH, h = blockIdx.x % d.NH;
  const int64_t first = int64_t(over_queries ? gridDim.y - 1 - blockIdx.y : blockIdx.y) * kRows;
  return HeadRows{b * d.T * 3 * d.C + h * HS, b * d.T * d.C + h * HS, first, first + 16 * int(threadIdx.x / 32)};
}

// ---- host side, for the launches (flash_attention_tc.cu, flash_attention_wgmma*.cu) ----
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
inline dim3 grid_for(int64_t B, int64_t T, int64_t NH) {
  const int64_t row_blocks = (T + kRows - 1) / kRows;
  SG_CHECK(row_blocks <= 65535, "fused attention: T = ", T, " needs ", row_blocks,
           " blocks of rows, more than the grid's 65535");
  return dim3(unsigned(B * NH), unsigned(row_blocks));
}

// ---- device side ----
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
// waits for this step's tile (the only group in flight), then one barrier,
// after which the tile is visible to the whole block and every warp is
// done with the other buffer (the step before computed on it); then the
// next tile starts into that buffer (when there is one: fetch_next), to
// land while this one is computed on. One barrier a step: the next tile's
// copies start at the same point as with a barrier before them too.
template <typename FetchNext>
__device__ void advance_tiles(bool has_next, FetchNext&& fetch_next) {
  async_wait<0>();
  __syncthreads();
  if (has_next) fetch_next();
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

// All 64 columns of scores at once (the forward's): s (16 x 64) = rows
// r0..r0 + 15 of a shared tile (16 x HS) times the tile's rows 0..63,
// transposed, over the first `chunks` 16-column chunks (the others stay
// 0). The head dimension is the outer loop, so each 16-column slice of the
// rows is read once (one ldmatrix) for all the chunks, where scores_pair
// reads it again for each pair of columns: a quarter fewer shared-memory
// reads, and eight independent sums in flight instead of two. Each sum
// still adds its products in kk order: the same bits as scores_pair.
template <typename T, int HS>
__device__ __forceinline__ void scores_tile(float (&s)[kTileBlocks][4], const T* rows_tile, int r0, const T* tile,
                                            int chunks) {
  const int lane = threadIdx.x % 32, i = lane / 8, r = lane % 8;
#pragma unroll
  for (int nb = 0; nb < kTileBlocks; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nb][e] = 0.0f;
  }
#pragma unroll
  for (int kk = 0; kk < HS / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, rows_tile + (r0 + 8 * (i % 2) + r) * stride_of<HS>() + 16 * kk + 8 * (i / 2));
#pragma unroll
    for (int nb = 0; nb < kTileBlocks; nb += 2) {
      if (nb / 2 >= chunks) continue;  // keys no row of the warp sees
      uint32_t b[4];
      b_pair_of_rows<HS>(b, tile, 8 * nb, 16 * kk);
      mma_pair<T>(s[nb], s[nb + 1], a, b);
    }
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
//
// It comes in two halves (online_softmax calls both), so that a kernel can
// run the first (the exponentials) while a product into o is still in
// flight and rescale o once it has landed (flash_attention_wgmma.cu). The
// first returns the rows' corrections exp2(m_old - m_new).
struct RowCorrections {
  float row[2];
};

__device__ __forceinline__ RowCorrections softmax_scores(float (&s)[kTileBlocks][4], float (&m)[2], float (&l)[2],
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
  RowCorrections correction;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float m_new = fmaxf(m[r], quad_max(tile_max[r]));
    correction.row[r] = m_new == -INFINITY ? 1.0f : fast_exp2(m[r] - m_new);
    m[r] = m_new;
    l[r] *= correction.row[r];
  }
#pragma unroll
  for (int nb = 0; nb < kTileBlocks; ++nb) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[nb][i] = m[i / 2] == -INFINITY ? 0.0f : fast_exp2(s[nb][i] - m[i / 2]);
      l[i / 2] += s[nb][i];
    }
  }
  return correction;
}

template <int HS>
__device__ __forceinline__ void rescale_rows(float (&o)[HS / 8][4], RowCorrections correction) {
#pragma unroll
  for (int nb = 0; nb < HS / 8; ++nb) {
#pragma unroll
    for (int i = 0; i < 4; ++i) o[nb][i] *= correction.row[i / 2];
  }
}

template <int HS>
__device__ void online_softmax(float (&s)[kTileBlocks][4], float (&o)[HS / 8][4], float (&m)[2], float (&l)[2],
                               int64_t k0, int64_t w0, int64_t T_, float scale_log2) {
  rescale_rows<HS>(o, softmax_scores(s, m, l, k0, w0, T_, scale_log2));
}

// The forward's end for a warp's 16 rows from w0: each row's sum over its
// quad, lse = m + log2(l) in natural-log units, and the rows of out (row
// stride C) = o / l.
template <typename T, int HS>
__device__ void finish_forward_rows(T* out, float* lse, const float (&o)[HS / 8][4], const float (&m)[2],
                                    float (&l)[2], int64_t w0, const TcDims& d) {
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
  float inverse[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] = quad_sum(l[r]);
    inverse[r] = 1.0f / l[r];
    const int64_t row = w0 + g + 8 * r;
    if (t == 0 && row < d.T) lse[blockIdx.x * d.T + row] = (m[r] + log2f(l[r])) / kLog2e;
  }
  write_rows<T, HS>(out, d.C, o, w0, d.T, inverse);
}

// The lse of this lane's rows g and g + 8 from w0 (0 past T), in log2 units.
__device__ __forceinline__ void load_row_lse(float (&row_lse)[2], const float* lse, int64_t w0, const TcDims& d) {
  const int g = (threadIdx.x % 32) >> 2;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = w0 + g + 8 * r;
    row_lse[r] = row < d.T ? lse[blockIdx.x * d.T + row] * kLog2e : 0.0f;
  }
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

// D = rowsum(dO * O) of this warp's 16 rows from w0 (dO's A fragments in
// d_o, O read here), into row_d (rows g, g + 8) and, inside T, D.
template <typename T, int HS>
__device__ void write_row_dots(float (&row_d)[2], float* D, const uint32_t (&d_o)[HS / 16][4], const T* out,
                               int64_t w0, const TcDims& d) {
  const int lane = threadIdx.x % 32, g = lane >> 2;
  const int64_t b = blockIdx.x / d.NH, h = blockIdx.x % d.NH;
  uint32_t o[HS / 16][4];
  load_a_rows<HS>(o, out + b * d.T * d.C + h * HS, d.C, w0, d.T);
  row_dots<T, HS>(row_d, d_o, o);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = w0 + g + 8 * r;
    if (lane % 4 == 0 && row < d.T) D[blockIdx.x * d.T + row] = row_d[r];
  }
}

// ---- the fused dQ (SG_FLASH_FUSED_DQ=1) ----
// The tile of dS^T it stages in shared memory: (64 keys, 64 queries), rows
// kDsStride apart (8 elements of padding, as the other tiles, so the 8 row
// groups of a warp's stores and loads fall in different banks).
constexpr int kDsStride = kTile + 8;

template <typename T>
constexpr size_t ds_tile_bytes() {
  return size_t(kTile) * kDsStride * sizeof(T);
}

// Stores an A fragment (16 x 16, as a_of_pair packs it: a lane's rows g and
// g + 8, columns 2 t, 2 t + 1 and 8 more) at rows r0.., columns c0.. of
// the dS^T tile.
template <typename T>
__device__ __forceinline__ void store_a_fragment(T* tile, const uint32_t (&a)[4], int r0, int c0) {
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane % 4;
  auto at = [&](int row, int col) { return reinterpret_cast<uint32_t*>(tile + (r0 + row) * kDsStride + c0 + col); };
  *at(g, 2 * t) = a[0];
  *at(g + 8, 2 * t) = a[1];
  *at(g, 8 + 2 * t) = a[2];
  *at(g + 8, 8 + 2 * t) = a[3];
}

// The A fragment (16 x 16) of X^T whose rows are X's columns c0.. and whose
// columns are X's rows r0.., X the dS^T tile: a transposing ldmatrix,
// matrix i from X's rows r0 + 8 (i / 2), columns c0 + 8 (i % 2).
template <typename T>
__device__ __forceinline__ void a_of_transposed(uint32_t (&a)[4], const T* tile, int r0, int c0) {
  const int lane = threadIdx.x % 32, i = lane / 8, r = lane % 8;
  ldmatrix_x4<true>(a, tile + (r0 + 8 * (i / 2) + r) * kDsStride + c0 + 8 * (i % 2));
}

// Where the partial of (query tile i, key block j <= i) of (batch, head) bh
// starts, in rows of HS floats: the causal pairs only, each query tile's
// key blocks in order, 64 rows a pair.
__device__ __forceinline__ int64_t partial_offset(int64_t bh, int64_t tiles, int64_t j, int64_t i) {
  return (bh * (tiles * (tiles + 1) / 2) + i * (i + 1) / 2 + j) * kTile;
}

}  // namespace
}  // namespace sg::cuda
