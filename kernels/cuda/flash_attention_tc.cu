// Fused causal attention on tensor cores (kernels/cuda/flash_attention_tc.h):
// the same math as flash_attention.cu (kernels/cpu/flash_attention.h writes
// it out), with the products as 16x16x16 WMMA tiles in bf16/f16 and f32 sums.
//
// A block is 4 warps; each warp owns 16 rows (queries in the forward and in
// dQ, keys in dK/dV) and the other side streams through shared memory. The
// per-row work a tile product cannot do (the online softmax, the masks, the
// dS formula) reads the warp's scores from shared memory, since a
// fragment's element layout is unspecified. Every output element has one
// writer: no atomics, the same bits every run.
#include "kernels/cuda/flash_attention_tc.h"

#include <mma.h>

#include <cstdlib>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/float_types.cuh"

namespace sg::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kWarps = 4, kBlockThreads = 32 * kWarps;
constexpr int kBlockRows = 16 * kWarps;  // rows a block owns: 16 per warp
constexpr int kKeyTile = 32;             // keys per step of the forward
constexpr int kStepRows = 16;            // the other side's rows per step of the backward

template <typename T>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major>;
template <typename T>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major>;  // a row-major tile, transposed
template <typename T>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

struct TcDims {
  int64_t T, C, NH;
  float scale;
};

constexpr size_t aligned(size_t bytes) { return (bytes + 127) / 128 * 128; }

// Hands out 128-byte aligned regions of the dynamic shared memory: WMMA
// loads and stores need 256-bit aligned addresses.
struct SharedCarver {
  unsigned char* next;
  template <typename X>
  __device__ X* take(size_t count) {
    X* region = reinterpret_cast<X*>(next);
    next += aligned(count * sizeof(X));
    return region;
  }
};

// tile[r][i] = src[(first + r) * row_stride + i] for rows < T, else 0; src
// is this (batch, head)'s row 0 of q, k, v or dO.
template <int HS, typename T>
__device__ void load_rows(T* tile, int rows, const T* src, int64_t row_stride, int64_t first, int64_t T_) {
  for (int index = threadIdx.x; index < rows * HS; index += blockDim.x) {
    const int r = index / HS, i = index % HS;
    tile[index] = first + r < T_ ? src[(first + r) * row_stride + i] : store<T>(0.0f);
  }
}

// Shared bytes of each kernel (the carving order below).
template <int HS, typename T>
constexpr size_t forward_shared_bytes() {
  return aligned(kBlockRows * HS * sizeof(T)) + 2 * aligned(kKeyTile * HS * sizeof(T)) +
         aligned(kWarps * 16 * kKeyTile * sizeof(float)) + aligned(kWarps * 16 * HS * sizeof(float)) +
         aligned(kWarps * 16 * kKeyTile * sizeof(T));
}
template <int HS, typename T>
constexpr size_t backward_shared_bytes() {  // dK/dV and dQ carve the same amounts
  return 2 * aligned(kBlockRows * HS * sizeof(T)) + 2 * aligned(kStepRows * HS * sizeof(T)) +
         2 * aligned(kBlockRows * sizeof(float)) + 2 * aligned(kWarps * 256 * sizeof(float)) +
         2 * aligned(kWarps * 256 * sizeof(T));
}

// out = softmax(mask(q k^T * scale)) v for 64 query rows of one (batch, head);
// lse = the rows' log-sum-exp.
template <typename T, int HS>
__global__ void __launch_bounds__(kBlockThreads)
    flash_forward_tc_kernel(T* out, float* lse, const T* qkv, TcDims d) {
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  SharedCarver carve{shared_bytes};
  T* q = carve.take<T>(kBlockRows * HS);   // (64, HS)
  T* k = carve.take<T>(kKeyTile * HS);     // (32, HS)
  T* v = carve.take<T>(kKeyTile * HS);
  float* all_s = carve.take<float>(kWarps * 16 * kKeyTile);
  float* all_o = carve.take<float>(kWarps * 16 * HS);
  T* all_p = carve.take<T>(kWarps * 16 * kKeyTile);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* s = all_s + warp * 16 * kKeyTile;  // this warp's scores (16, 32)
  float* o = all_o + warp * 16 * HS;        // its output rows so far (16, HS), f32
  T* p = all_p + warp * 16 * kKeyTile;      // its probabilities (16, 32)

  const int64_t b = blockIdx.y / d.NH, h = blockIdx.y % d.NH, row_stride = 3 * d.C;
  const T* base = qkv + b * d.T * row_stride + h * HS;
  const int64_t q0 = int64_t(blockIdx.x) * kBlockRows, warp_first = q0 + warp * 16;
  load_rows<HS>(q, kBlockRows, base, row_stride, q0, d.T);
  for (int i = lane; i < 16 * HS; i += 32) o[i] = 0.0f;
  float m = -INFINITY, l = 0.0f;  // lanes 0-15: the running max and sum of row warp_first + lane

  const int64_t block_last = min(d.T - 1, q0 + kBlockRows - 1);
  for (int64_t k0 = 0; k0 <= block_last; k0 += kKeyTile) {
    __syncthreads();  // every warp is done with the previous K and V
    load_rows<HS>(k, kKeyTile, base + d.C, row_stride, k0, d.T);
    load_rows<HS>(v, kKeyTile, base + 2 * d.C, row_stride, k0, d.T);
    __syncthreads();
    if (k0 > warp_first + 15) continue;  // every key is after every row of this warp

    // s = q_w k^T: (16, HS) (HS, 32)
    for (int n = 0; n < kKeyTile / 16; ++n) {
      FragC acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int kk = 0; kk < HS / 16; ++kk) {
        FragA<T> a;
        FragBCol<T> key;
        wmma::load_matrix_sync(a, q + warp * 16 * HS + kk * 16, HS);
        wmma::load_matrix_sync(key, k + n * 16 * HS + kk * 16, HS);
        wmma::mma_sync(acc, a, key, acc);
      }
      wmma::store_matrix_sync(s + n * 16, acc, kKeyTile, wmma::mem_row_major);
    }
    __syncwarp();
    if (lane < 16) {  // the online softmax of row warp_first + lane
      const int64_t t = warp_first + lane;
      float* s_row = s + lane * kKeyTile;
      float tile_max = -INFINITY;
      for (int c = 0; c < kKeyTile; ++c) {
        const float x = k0 + c <= t && k0 + c < d.T ? s_row[c] * d.scale : -INFINITY;
        s_row[c] = x;
        tile_max = fmaxf(tile_max, x);
      }
      const float m_new = fmaxf(m, tile_max);
      const float correction = m_new == -INFINITY ? 1.0f : expf(m - m_new);
      float sum = 0.0f;
      for (int c = 0; c < kKeyTile; ++c) {
        const T e = store<T>(s_row[c] == -INFINITY ? 0.0f : expf(s_row[c] - m_new));
        p[lane * kKeyTile + c] = e;
        sum += load(e);  // the rounded value, which the product below uses
      }
      l = l * correction + sum;
      m = m_new;
      for (int i = 0; i < HS; ++i) o[lane * HS + i] *= correction;
    }
    __syncwarp();
    // o += p v: (16, 32) (32, HS)
    for (int n = 0; n < HS / 16; ++n) {
      FragC acc;
      wmma::load_matrix_sync(acc, o + n * 16, HS, wmma::mem_row_major);
      for (int kk = 0; kk < kKeyTile / 16; ++kk) {
        FragA<T> a;
        FragBRow<T> value;
        wmma::load_matrix_sync(a, p + kk * 16, kKeyTile);
        wmma::load_matrix_sync(value, v + kk * 16 * HS + n * 16, HS);
        wmma::mma_sync(acc, a, value, acc);
      }
      wmma::store_matrix_sync(o + n * 16, acc, HS, wmma::mem_row_major);
    }
    __syncwarp();
  }
  if (lane < 16 && warp_first + lane < d.T) {
    const int64_t t = warp_first + lane;
    const float inverse = 1.0f / l;
    for (int i = 0; i < HS; ++i) out[(b * d.T + t) * d.C + h * HS + i] = store<T>(o[lane * HS + i] * inverse);
    lse[blockIdx.y * d.T + t] = m + logf(l);
  }
}

// One 16 x 16 step of the backward: s = s_rows s_cols^T and dp = dp_rows dp_cols^T,
// each operand (16, HS) row-major in shared memory, stored row-major (16, 16)
// in f32 to the warp's scratch.
template <int HS, typename T>
__device__ void score_tiles(float* s, const T* s_rows, const T* s_cols, float* dp, const T* dp_rows, const T* dp_cols) {
  FragC s_acc, dp_acc;
  wmma::fill_fragment(s_acc, 0.0f);
  wmma::fill_fragment(dp_acc, 0.0f);
  for (int kk = 0; kk < HS / 16; ++kk) {
    FragA<T> a;
    FragBCol<T> b;
    wmma::load_matrix_sync(a, s_rows + kk * 16, HS);
    wmma::load_matrix_sync(b, s_cols + kk * 16, HS);
    wmma::mma_sync(s_acc, a, b, s_acc);
    wmma::load_matrix_sync(a, dp_rows + kk * 16, HS);
    wmma::load_matrix_sync(b, dp_cols + kk * 16, HS);
    wmma::mma_sync(dp_acc, a, b, dp_acc);
  }
  wmma::store_matrix_sync(s, s_acc, 16, wmma::mem_row_major);
  wmma::store_matrix_sync(dp, dp_acc, 16, wmma::mem_row_major);
  __syncwarp();
}

// dqkv[rows of the warp, part] = the warp's (16, HS) accumulator tiles,
// rounded once to T, rows < T. Each element has this one writer.
template <typename T, int HS>
__device__ void write_rows(T* dqkv, const FragC (&tiles)[HS / 16], float* scratch, const TcDims& d, int64_t b,
                           int64_t h, int64_t first, int part) {
  const int lane = threadIdx.x % 32;
  for (int n = 0; n < HS / 16; ++n) {
    wmma::store_matrix_sync(scratch, tiles[n], 16, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 256; e += 32) {
      const int64_t t = first + e / 16;
      if (t < d.T) dqkv[(b * d.T + t) * 3 * d.C + part * d.C + h * HS + n * 16 + e % 16] = store<T>(scratch[e]);
    }
    __syncwarp();
  }
}

// dK and dV for 64 key rows; the query tiles that can see them stream by.
//   s^T = k_w q^T, dp^T = v_w dO^T, p = exp(s * scale - lse), ds = p (dp - D) scale,
//   dV_w += p^T dO, dK_w += ds^T q.
template <typename T, int HS>
__global__ void __launch_bounds__(kBlockThreads)
    flash_backward_dkdv_tc_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D, TcDims d) {
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  SharedCarver carve{shared_bytes};
  T* k = carve.take<T>(kBlockRows * HS);
  T* v = carve.take<T>(kBlockRows * HS);
  T* q = carve.take<T>(kStepRows * HS);
  T* dO = carve.take<T>(kStepRows * HS);
  float* row_lse = carve.take<float>(kBlockRows);
  float* row_d = carve.take<float>(kBlockRows);
  float* all_s = carve.take<float>(kWarps * 256);
  float* all_dp = carve.take<float>(kWarps * 256);
  T* all_p = carve.take<T>(kWarps * 256);
  T* all_ds = carve.take<T>(kWarps * 256);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float *s = all_s + warp * 256, *dp = all_dp + warp * 256;  // (16 keys, 16 queries)
  T *p = all_p + warp * 256, *ds = all_ds + warp * 256;

  const int64_t b = blockIdx.y / d.NH, h = blockIdx.y % d.NH, row_stride = 3 * d.C;
  const T* base = qkv + b * d.T * row_stride + h * HS;
  const T* dout_base = dout + b * d.T * d.C + h * HS;
  const int64_t k0 = int64_t(blockIdx.x) * kBlockRows, warp_first = k0 + warp * 16;
  load_rows<HS>(k, kBlockRows, base + d.C, row_stride, k0, d.T);
  load_rows<HS>(v, kBlockRows, base + 2 * d.C, row_stride, k0, d.T);
  FragC dk[HS / 16], dv[HS / 16];
  for (int n = 0; n < HS / 16; ++n) {
    wmma::fill_fragment(dk[n], 0.0f);
    wmma::fill_fragment(dv[n], 0.0f);
  }
  for (int64_t t0 = k0; t0 < d.T; t0 += kStepRows) {
    __syncthreads();
    load_rows<HS>(q, kStepRows, base, row_stride, t0, d.T);
    load_rows<HS>(dO, kStepRows, dout_base, d.C, t0, d.T);
    for (int r = threadIdx.x; r < kStepRows; r += blockDim.x) {
      row_lse[r] = t0 + r < d.T ? lse[blockIdx.y * d.T + t0 + r] : 0.0f;
      row_d[r] = t0 + r < d.T ? D[blockIdx.y * d.T + t0 + r] : 0.0f;
    }
    __syncthreads();
    if (t0 + kStepRows - 1 < warp_first) continue;  // every query is before every key of this warp

    score_tiles<HS>(s, k + warp * 16 * HS, q, dp, v + warp * 16 * HS, dO);  // s^T and dp^T: (16 keys, 16 queries)
    for (int e = lane; e < 256; e += 32) {
      const int64_t key_row = warp_first + e / 16, t = t0 + e % 16;
      const bool seen = key_row <= t && t < d.T && key_row < d.T;
      const float probability = seen ? expf(s[e] * d.scale - row_lse[e % 16]) : 0.0f;
      p[e] = store<T>(probability);
      ds[e] = store<T>(probability * (dp[e] - row_d[e % 16]) * d.scale);
    }
    __syncwarp();
    FragA<T> p_frag, ds_frag;
    wmma::load_matrix_sync(p_frag, p, 16);
    wmma::load_matrix_sync(ds_frag, ds, 16);
    for (int n = 0; n < HS / 16; ++n) {
      FragBRow<T> grad, query;
      wmma::load_matrix_sync(grad, dO + n * 16, HS);
      wmma::mma_sync(dv[n], p_frag, grad, dv[n]);
      wmma::load_matrix_sync(query, q + n * 16, HS);
      wmma::mma_sync(dk[n], ds_frag, query, dk[n]);
    }
  }
  write_rows<T, HS>(dqkv, dk, s, d, b, h, warp_first, 1);
  write_rows<T, HS>(dqkv, dv, s, d, b, h, warp_first, 2);
}

// dQ for 64 query rows; the key tiles they can see stream by.
//   s = q_w k^T, dp = dO_w v^T, ds = p (dp - D) scale, dQ_w += ds k.
template <typename T, int HS>
__global__ void __launch_bounds__(kBlockThreads)
    flash_backward_dq_tc_kernel(T* dqkv, const T* dout, const T* qkv, const float* lse, const float* D, TcDims d) {
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  SharedCarver carve{shared_bytes};
  T* q = carve.take<T>(kBlockRows * HS);
  T* dO = carve.take<T>(kBlockRows * HS);
  T* k = carve.take<T>(kStepRows * HS);
  T* v = carve.take<T>(kStepRows * HS);
  float* row_lse = carve.take<float>(kBlockRows);
  float* row_d = carve.take<float>(kBlockRows);
  float* all_s = carve.take<float>(kWarps * 256);
  float* all_dp = carve.take<float>(kWarps * 256);
  T* all_ds = carve.take<T>(kWarps * 256);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float *s = all_s + warp * 256, *dp = all_dp + warp * 256;  // (16 queries, 16 keys)
  T* ds = all_ds + warp * 256;

  const int64_t b = blockIdx.y / d.NH, h = blockIdx.y % d.NH, row_stride = 3 * d.C;
  const T* base = qkv + b * d.T * row_stride + h * HS;
  const int64_t q0 = int64_t(blockIdx.x) * kBlockRows, warp_first = q0 + warp * 16;
  load_rows<HS>(q, kBlockRows, base, row_stride, q0, d.T);
  load_rows<HS>(dO, kBlockRows, dout + b * d.T * d.C + h * HS, d.C, q0, d.T);
  for (int r = threadIdx.x; r < kBlockRows; r += blockDim.x) {
    row_lse[r] = q0 + r < d.T ? lse[blockIdx.y * d.T + q0 + r] : 0.0f;
    row_d[r] = q0 + r < d.T ? D[blockIdx.y * d.T + q0 + r] : 0.0f;
  }
  FragC dq[HS / 16];
  for (int n = 0; n < HS / 16; ++n) wmma::fill_fragment(dq[n], 0.0f);
  const int64_t block_last = min(d.T - 1, q0 + kBlockRows - 1);
  for (int64_t s0 = 0; s0 <= block_last; s0 += kStepRows) {
    __syncthreads();
    load_rows<HS>(k, kStepRows, base + d.C, row_stride, s0, d.T);
    load_rows<HS>(v, kStepRows, base + 2 * d.C, row_stride, s0, d.T);
    __syncthreads();
    if (s0 > warp_first + 15) continue;  // every key is after every query of this warp

    score_tiles<HS>(s, q + warp * 16 * HS, k, dp, dO + warp * 16 * HS, v);  // s and dp: (16 queries, 16 keys)
    for (int e = lane; e < 256; e += 32) {
      const int r = warp * 16 + e / 16;
      const int64_t t = q0 + r, key_row = s0 + e % 16;
      const bool seen = key_row <= t && key_row < d.T && t < d.T;
      const float probability = seen ? expf(s[e] * d.scale - row_lse[r]) : 0.0f;
      ds[e] = store<T>(probability * (dp[e] - row_d[r]) * d.scale);
    }
    __syncwarp();
    FragA<T> ds_frag;
    wmma::load_matrix_sync(ds_frag, ds, 16);
    for (int n = 0; n < HS / 16; ++n) {
      FragBRow<T> key;
      wmma::load_matrix_sync(key, k + n * 16, HS);
      wmma::mma_sync(dq[n], ds_frag, key, dq[n]);
    }
  }
  write_rows<T, HS>(dqkv, dq, s, d, b, h, warp_first, 0);
}

// A launch may ask for at most 48 KiB of dynamic shared memory unless the
// kernel opts in to more (cudaFuncSetAttribute), which these do not. The
// emulator refuses such a launch when a test makes it; this refuses the
// build, at the largest head size (bf16 and f16 carve the same bytes).
static_assert(forward_shared_bytes<kFlashTensorCoreMaxHeadSize, __nv_bfloat16>() <= 48 * 1024,
              "the tensor-core forward needs more than 48 KiB of shared memory");
static_assert(backward_shared_bytes<kFlashTensorCoreMaxHeadSize, __nv_bfloat16>() <= 48 * 1024,
              "the tensor-core backward needs more than 48 KiB of shared memory");

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

dim3 grid_for(int64_t B, int64_t T, int64_t NH) {
  SG_CHECK(B * NH <= 65535, "fused attention: B * NH = ", B * NH, " exceeds the grid's 65535; split the batch");
  return dim3(unsigned((T + kBlockRows - 1) / kBlockRows), unsigned(B * NH));
}

}  // namespace

bool flash_tensor_cores_apply(DType dtype, int64_t head_size) {
  static const bool enabled = [] {
    const char* setting = std::getenv("SG_FLASH_TENSOR_CORES");
    return setting == nullptr || std::string(setting) != "0";
  }();
  return enabled && (dtype == DType::bf16 || dtype == DType::f16) && head_size % 16 == 0 && head_size >= 16 &&
         head_size <= kFlashTensorCoreMaxHeadSize;
}

void flash_forward_tensor_cores(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t C, int64_t NH,
                                DType dtype, cudaStream_t stream) {
  const TcDims d{T, C, NH, 1.0f / sqrtf(float(C / NH))};
  with_half_type(dtype, [&](auto tag) {
    using Ty = decltype(tag);
    with_head_size(C / NH, [&](auto head_size) {
      constexpr int HS = decltype(head_size)::value;
      flash_forward_tc_kernel<Ty, HS><<<grid_for(B, T, NH), kBlockThreads, forward_shared_bytes<HS, Ty>(), stream>>>(
          static_cast<Ty*>(out), lse, static_cast<const Ty*>(qkv), d);
    });
  });
  SG_CHECK_LAUNCH();
}

void flash_backward_tensor_cores(void* dqkv, const float* row_dots, const void* dout, const void* qkv,
                                 const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype,
                                 cudaStream_t stream) {
  const TcDims d{T, C, NH, 1.0f / sqrtf(float(C / NH))};
  with_half_type(dtype, [&](auto tag) {
    using Ty = decltype(tag);
    const auto* dO = static_cast<const Ty*>(dout);
    const auto* x = static_cast<const Ty*>(qkv);
    with_head_size(C / NH, [&](auto head_size) {
      constexpr int HS = decltype(head_size)::value;
      constexpr size_t bytes = backward_shared_bytes<HS, Ty>();
      auto* dx = static_cast<Ty*>(dqkv);
      flash_backward_dkdv_tc_kernel<Ty, HS><<<grid_for(B, T, NH), kBlockThreads, bytes, stream>>>(dx, dO, x, lse,
                                                                                                 row_dots, d);
      SG_CHECK_LAUNCH();
      flash_backward_dq_tc_kernel<Ty, HS><<<grid_for(B, T, NH), kBlockThreads, bytes, stream>>>(dx, dO, x, lse,
                                                                                               row_dots, d);
      SG_CHECK_LAUNCH();
    });
  });
}

}  // namespace sg::cuda
